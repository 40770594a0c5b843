"""Several API processes in front of one engine core (`pyinfer serve --api-server-count N`).

One Python process streaming every token of every request runs out of CPU before the GPU does. The
launcher (this process) binds the port, starts the engine core with one ZMQ link per API process and
then the API processes, each serving the shared socket (the kernel spreads connections among them) and
attached to its own link. It forwards SIGTERM/SIGINT to them (each drains its own requests), and exits
non-zero if any of them or the core ended badly. The core stops once every API process has said
Shutdown, and exits if the launcher dies; an API process exits if the core or the launcher dies.
Counters for /metrics are kept in files that any of them sums (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import EngineLink, core_command, encode_config
from pyinfer.server.auth import ApiKeys
from pyinfer.server.config import ServerConfig

log = logging.getLogger("pyinfer.server")

SHUTDOWN_GRACE = 15.0  # seconds the core may take to stop once the API processes have gone


def serve_with_api_processes(config: ServerConfig, engine_config: EngineConfig) -> int:
    """Run N API processes and the engine core until they stop; returns the exit code."""
    if ApiKeys(config.api_keys, config.api_key_file).limited():
        raise ValueError(
            "the key file's rate limits are kept per API process: they need --api-server-count 1"
        )
    listener = socket.create_server((config.host, config.port), backlog=2048)
    listener.set_inheritable(True)
    run_dir = Path(tempfile.mkdtemp(prefix="pyinfer-api-"))
    (run_dir / "metrics").mkdir()
    links = [
        EngineLink(f"ipc://{run_dir}/to-core-{i}", f"ipc://{run_dir}/from-core-{i}", 0)
        for i in range(config.api_server_count)
    ]
    read_fd, lifeline = os.pipe()  # the core exits when our end closes: with us
    log_args = ("--log-level", config.log_level, "--log-format", config.log_format)
    core = subprocess.Popen(
        core_command(engine_config, [(link.input, link.output) for link in links], read_fd, log_args),
        pass_fds=(read_fd,),
        start_new_session=True,  # Ctrl-C in a terminal reaches the API processes, which drain
    )
    os.close(read_fd)
    log.info("engine core started (pid %d); starting %d API processes", core.pid, len(links))
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics")}
    workers = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "pyinfer.server.api_process", "--index", str(i)),
                *("--server-config", encode_config(config), "--engine-config", encode_config(engine_config)),
                *("--link", json.dumps({**vars(link), "core_pid": core.pid})),
                *("--fd", str(listener.fileno())),
            ],
            pass_fds=(listener.fileno(),),
            env=env,
        )
        for i, link in enumerate(links)
    ]
    listener.close()  # the API processes hold it

    def forward(sig: int, _frame: object) -> None:
        log.info("received %s: the API processes drain", signal.Signals(sig).name)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    try:
        return _wait(core, workers)
    finally:
        os.close(lifeline)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait(core: subprocess.Popen, workers: list[subprocess.Popen]) -> int:
    """Wait for the children; the first API process to fail, or the core's death, stops the rest."""
    failed = False
    running = {worker.pid: worker for worker in workers}
    while running:
        pid, status = os.wait()  # blocks: an idle launcher takes no CPU
        code = os.waitstatus_to_exitcode(status)
        if pid == core.pid:  # 0: every API process said Shutdown (they are on their way out)
            core.returncode = code
            if code != 0:
                log.error("engine core exited with code %d: the API processes stop", code)
                failed = True  # they see it and exit non-zero
            continue
        worker = running.pop(pid, None)
        if worker is None:
            continue
        worker.returncode = code
        if code != 0 and not failed:
            log.error("API process %d exited with code %d: stopping the others", pid, code)
            failed = True
            for other in running.values():
                other.send_signal(signal.SIGTERM)
    if core.returncode is None:  # it stops once every API process has said Shutdown
        try:
            core.wait(SHUTDOWN_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("engine core did not stop in %.0fs; killing it", SHUTDOWN_GRACE)
            core.kill()
            core.wait()
            failed = True
    return 1 if failed or core.returncode != 0 else 0
