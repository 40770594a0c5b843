"""Several API processes in front of one engine core (`pyinfer serve --api-server-count N`).

One Python process streaming every token of every request runs out of CPU before the GPU does. The
launcher (this process) binds the port, starts the engine core with one ZMQ link per API process and
then the API processes, each serving the shared socket (the kernel spreads connections among them) and
attached to its own link. It forwards SIGTERM/SIGINT to them (each drains its own requests), stops the
core once they are all gone, and exits non-zero if any of them or the core ended badly. The core exits
if the launcher dies; an API process exits if the core or the launcher dies. Counters for /metrics are
kept in files that any of them sums (prometheus_client's multiprocess mode); stored Responses and rate
limits in one SQLite database (shared_state.py); the queue limits count the core's whole queue, which
it reports to each of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgspec

from pyinfer.config import CORE_SETTINGS_REFUSED, SETTINGS_REFUSED, EngineConfig
from pyinfer.engine.core_client import EngineLink, core_command
from pyinfer.engine.queue_board import QueueBoard
from pyinfer.run_dirs import make_run_dir
from pyinfer.server.api_process import Spec
from pyinfer.server.config import ServerConfig
from pyinfer.server.shared_state import SharedState

log = logging.getLogger("pyinfer.server")

SHUTDOWN_GRACE = 15.0  # seconds the core may take to stop once the API processes have gone


def serve_with_api_processes(
    config: ServerConfig, engine_config: EngineConfig, listeners: list[socket.socket]
) -> int:
    """Run N API processes serving `listeners` and the engine core until they stop; returns the exit
    code."""
    run_dir = make_run_dir("api-")
    try:
        return Launcher(config, engine_config, listeners, run_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class Launcher:
    def __init__(
        self,
        config: ServerConfig,
        engine_config: EngineConfig,
        listeners: list[socket.socket],
        run_dir: Path,
    ):
        self.failed = False
        self.stopping = False  # a signal asked for the stop
        self.running: dict[int, int] = {}  # pid -> index of the API processes not yet reaped
        for sig in (signal.SIGTERM, signal.SIGINT):  # before any child exists: none is left unsignalled
            signal.signal(sig, self._forward)
        (run_dir / "metrics").mkdir()
        shared_state = str(run_dir / "shared.sqlite")
        SharedState(shared_state).close()  # made once here: the API processes open it as it is, all at once
        queue_board = str(run_dir / "queue-board")
        QueueBoard.create(queue_board, config.api_server_count)
        links = [  # (requests, outputs) addresses of each API process's link
            (f"ipc://{run_dir}/to-core-{i}", f"ipc://{run_dir}/from-core-{i}")
            for i in range(config.api_server_count)
        ]
        read_fd, lifeline = os.pipe()
        self.lifeline: int | None = lifeline  # the core exits when our end closes
        self.core = subprocess.Popen(
            core_command(engine_config, links, read_fd, config.core_args()),
            pass_fds=(read_fd,),
            start_new_session=True,  # stopped by its lifeline, once the API processes have drained
        )
        os.close(read_fd)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics")}
        for i, link in enumerate(links):
            engine_link = EngineLink(*link, self.core.pid, queue_board, i)
            spec = Spec(i, config, engine_config, engine_link, os.getpid(), shared_state)
            worker = subprocess.Popen(
                [sys.executable, "-m", "pyinfer.server.api_process"]
                + [arg for sock in listeners for arg in ("--fd", str(sock.fileno()))],
                pass_fds=[sock.fileno() for sock in listeners],
                stdin=subprocess.PIPE,
                env=env,
                # a terminal's Ctrl-C reaches only us, and we pass each signal on once: a second Ctrl-C
                # is a second signal to them (end what is in flight now), not two signals at the first
                start_new_session=True,
            )
            with contextlib.suppress(BrokenPipeError):  # one a signal stopped already
                worker.stdin.write(msgspec.json.encode(spec))
                worker.stdin.close()
            self.running[worker.pid] = i
            if self.stopping:  # a signal came while we started them
                self._signal_api_processes()
        for sock in listeners:
            sock.close()  # the API processes hold them
        log.info("engine core (pid %d) and %d API processes started", self.core.pid, len(links))

    def run(self) -> int:
        try:
            self._wait_for_api_processes()
            self._stop_core()
        finally:
            self._close_lifeline()
        if self.core.returncode == CORE_SETTINGS_REFUSED:  # it said why: a start refused, as a bad flag's
            return SETTINGS_REFUSED
        return 1 if self.failed else 0

    def _close_lifeline(self) -> None:
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None

    def _forward(self, sig: int, _frame: object) -> None:
        """Pass the signal on as it came: the API processes drain at the first, and a second SIGINT
        (Ctrl-C again) ends what they have in flight."""
        log.info("received %s: passed on to the API processes", signal.Signals(sig).name)
        self.stopping = True
        self._signal_api_processes(sig)

    def _signal_api_processes(self, sig: int = signal.SIGTERM) -> None:
        # by pid, never through Popen (which would reap them behind os.wait's back)
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_for_api_processes(self) -> None:
        """The first to fail, or the core's death, stops the rest."""
        while self.running:
            try:
                pid, status = os.wait()  # blocks: an idle launcher takes no CPU
            except ChildProcessError:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid == self.core.pid:
                self.core.returncode = code
                if not self.stopping:
                    why = "refused its settings" if code == CORE_SETTINGS_REFUSED else f"exited (code {code})"
                    log.error("engine core %s: stopping the API processes", why)
                    self.failed = True
                    self._signal_api_processes()  # they see it too, and fail what is in flight
                continue
            # asked to stop, one still starting dies of the signal rather than draining: nothing to drain
            clean = code == 0 or (self.stopping and code in (-signal.SIGTERM, -signal.SIGINT))
            if self.running.pop(pid, None) is not None and not clean and not self.failed:
                log.error("API process %d exited with code %d: stopping the others", pid, code)
                self.failed = True
                self._signal_api_processes()

    def _stop_core(self) -> None:
        """Once the API processes are gone: the core stops on their Shutdowns, or on our end of its
        lifeline closing (it looks once loaded). One still loading past the grace has nothing to drain:
        it is killed, a failure only where no one asked us to stop."""
        if self.core.returncode is not None:
            return
        self._close_lifeline()
        try:
            self.core.wait(SHUTDOWN_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("engine core did not stop in %.0fs; killing it", SHUTDOWN_GRACE)
            self.core.kill()
            self.core.wait()
            self.failed = self.failed or not self.stopping
