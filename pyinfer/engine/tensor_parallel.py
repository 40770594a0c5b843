"""Rank 0's side of a tensor-parallel group: it starts ranks 1..N-1 (`python -m pyinfer.engine.tp_worker`),
joins their group, and takes the whole group down, itself included, when any of them dies.

Rank 0 is the engine (in the engine-core process, or in-process for the offline API): it schedules, samples
and sends each step's plan on the step channel; the others run the same forward on their shards. Each
other rank watches rank 0 through a pipe whose end closes when rank 0 is gone, and ignores SIGINT/SIGTERM:
rank 0 stops it (after a drain, in the server), or its death does.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time

import msgspec
import torch
import torch.distributed as dist

from pyinfer.config import EngineConfig
from pyinfer.distributed import check_split, init_group
from pyinfer.distributed.step_channel import StepSender
from pyinfer.engine.model_setup import rank_device
from pyinfer.logs import configured_format
from pyinfer.models.loader import load_config

log = logging.getLogger(__name__)


class WorkerSpec(msgspec.Struct):
    """What a rank other than 0 starts from (JSON on its stdin); the descriptors are passed to it."""

    config: EngineConfig
    model_path: str
    load_format: str
    rank: int
    size: int
    store_port: int
    steps_memfd: int
    steps_socket: int
    rank0_fd: int  # read end of a pipe rank 0 holds open: EOF once rank 0 is gone
    log_level: str
    log_format: str


class TensorParallelWorkers:
    """Ranks 1..N-1, started and joined; `group` is rank 0's handle on the group, `steps` its channel.
    Anything that fails while they start ends the ones already started and raises here."""

    def __init__(self, config: EngineConfig, model_path: str, load_format: str, device: torch.device):
        size = config.tensor_parallel_size
        if device.type == "cuda" and (device.index or 0) + size > torch.cuda.device_count():
            raise ValueError(
                f"tensor_parallel_size {size} needs {size} GPUs from {device}; "
                f"this host has {torch.cuda.device_count()}"
            )
        cfg = load_config(model_path, load_format)
        check_split(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, size)
        self.stopping = False  # set before any rank is ended on purpose: their watches stay quiet
        self.procs: list[subprocess.Popen] = []
        self.steps = StepSender(size - 1)
        rank0_read, self._rank0_alive = os.pipe()
        try:
            store = dist.TCPStore("127.0.0.1", 0, size, True, wait_for_workers=False)  # any free port
            level = logging.getLevelName(logging.getLogger("pyinfer").getEffectiveLevel())
            for rank in range(1, size):
                memfd, socket_fd = self.steps.receiver_fds(rank - 1)
                spec = WorkerSpec(
                    config,
                    model_path,
                    load_format,
                    rank,
                    size,
                    store.port,
                    memfd,
                    socket_fd,
                    rank0_read,
                    level,
                    configured_format(),
                )
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pyinfer.engine.tp_worker"],
                    stdin=subprocess.PIPE,
                    pass_fds=(memfd, socket_fd, rank0_read),
                )
                self.procs.append(proc)
                proc.stdin.write(msgspec.json.encode(spec))
                proc.stdin.close()
                threading.Thread(target=self._watch, args=(rank, proc), daemon=True).start()
            self.steps.close_receiver_fds()
            log.info("started tensor-parallel ranks 1..%d (pids %s)", size - 1, [p.pid for p in self.procs])
            self.group = init_group(0, size, store, rank_device(device, 0))
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(rank0_read)
        atexit.register(self.stop)

    def _watch(self, rank: int, proc: subprocess.Popen) -> None:
        """A rank that exits while the group runs takes the group down: no half-group can step."""
        code = proc.wait()
        if self.stopping:
            return
        log.error(
            "tensor-parallel rank %d (pid %d) exited with code %d: stopping the group", rank, proc.pid, code
        )
        for other in self.procs:
            if other.poll() is None:
                other.kill()
        logging.shutdown()
        os._exit(1)  # rank 0 may be blocked in a collective that can no longer complete

    def stop(self, timeout: float = 10.0) -> None:
        """Tells the other ranks to leave, waits for them (then kills what is left), and leaves the group."""
        if self.stopping:
            return
        self.stopping = True
        self.steps.stop()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("tensor-parallel worker %d did not stop in %.0fs: killed", proc.pid, timeout)
        self._release()
        self.group.close()

    def kill(self) -> None:
        """Ends the other ranks at once: rank 0 failed to start, or failed in a step after its plan was
        sent (the ranks are out of step for good: the group cannot run again)."""
        if self.stopping:
            return
        self.stopping = True
        self._release()
        if hasattr(self, "group"):
            self.group.close()

    def _release(self) -> None:
        """Kills what is left of the other ranks, waits for them, and closes the channel and the pipe."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.steps.close()
        os.close(self._rank0_alive)
        atexit.unregister(self.stop)
