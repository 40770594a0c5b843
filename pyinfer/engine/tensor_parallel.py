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

import msgspec
import torch
import torch.distributed as dist

from pyinfer.config import EngineConfig
from pyinfer.distributed import check_split, init_group
from pyinfer.distributed.step_channel import StepSender
from pyinfer.engine.model_setup import rank_device
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


class TensorParallelWorkers:
    """Ranks 1..N-1, started and joined; `group` is rank 0's handle on the group, `steps` its channel."""

    def __init__(self, config: EngineConfig, model_path: str, load_format: str, device: torch.device):
        size = config.tensor_parallel_size
        if device.type == "cuda" and (device.index or 0) + size > torch.cuda.device_count():
            raise ValueError(
                f"tensor_parallel_size {size} needs {size} GPUs from {device}; "
                f"this host has {torch.cuda.device_count()}"
            )
        cfg = load_config(model_path, load_format)
        check_split(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, size)
        store = dist.TCPStore("127.0.0.1", 0, size, True, wait_for_workers=False)  # any free port
        self.steps = StepSender(size - 1)
        rank0_read, self._rank0_alive = os.pipe()
        self.stopping = False
        self.procs: list[subprocess.Popen] = []
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
                logging.getLevelName(logging.getLogger("pyinfer").getEffectiveLevel()),
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyinfer.engine.tp_worker"],
                stdin=subprocess.PIPE,
                pass_fds=(memfd, socket_fd, rank0_read),
            )
            proc.stdin.write(msgspec.json.encode(spec))
            proc.stdin.close()
            self.procs.append(proc)
            threading.Thread(target=self._watch, args=(rank, proc), daemon=True).start()
        os.close(rank0_read)
        self.steps.close_receiver_fds()
        atexit.register(self.stop)
        log.info("started tensor-parallel ranks 1..%d (pids %s)", size - 1, [p.pid for p in self.procs])
        try:
            self.group = init_group(0, size, store, rank_device(device, 0))
        except BaseException:
            self.kill()
            raise

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

    def kill(self) -> None:
        """Ends the other ranks at once (rank 0 failed to start: there is no step to finish)."""
        self.stopping = True
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.steps.close()
        os.close(self._rank0_alive)

    def stop(self, timeout: float = 10.0) -> None:
        """Tells the other ranks to leave, waits for them (then kills what is left), and leaves the group."""
        if self.stopping:
            return
        self.stopping = True
        self.steps.stop()
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tensor-parallel worker %d did not stop in %.0fs: killed", proc.pid, timeout)
                proc.kill()
                proc.wait()
        self.steps.close()
        os.close(self._rank0_alive)
        self.group.close()
