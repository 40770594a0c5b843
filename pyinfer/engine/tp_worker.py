"""A rank other than 0 of a tensor-parallel group: it loads its shard of the model, then runs each step's
forward pass as rank 0's plan arrives on the step channel, until rank 0 says stop. It samples nothing:
rank 0 broadcasts the ids it sampled. Started by TensorParallelWorkers with a WorkerSpec on stdin."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import msgspec
import torch.distributed as dist

from pyinfer.distributed import init_group
from pyinfer.distributed.step_channel import StepReceiver
from pyinfer.engine.model_runner import ModelRunner
from pyinfer.engine.model_setup import load_shard, rank_device, resolve_device
from pyinfer.engine.step_plan import StepPlan
from pyinfer.engine.tensor_parallel import WorkerSpec
from pyinfer.logs import configure_logging

log = logging.getLogger("pyinfer.engine.tp_worker")


def exit_with_rank0(fd: int) -> None:
    """Blocks until rank 0 is gone (its end of the pipe closes), then exits: nothing is left to follow,
    and this rank may be blocked in a collective that will never complete."""
    while os.read(fd, 1):
        pass
    log.error("rank 0 of the tensor-parallel group is gone: exiting")
    os._exit(1)


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=WorkerSpec)
    configure_logging(spec.log_level, spec.log_format, process=f"tp-rank-{spec.rank}")
    for sig in (signal.SIGTERM, signal.SIGINT):  # rank 0 stops this process, or its death does
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=exit_with_rank0, args=(spec.rank0_fd,), daemon=True).start()
    device = rank_device(resolve_device(spec.config.device), spec.rank)
    store = dist.TCPStore("127.0.0.1", spec.store_port, spec.size, False)
    group = init_group(spec.rank, spec.size, store, device)
    model = load_shard(spec.config, spec.model_path, spec.load_format, device, group)
    runner = ModelRunner(spec.config, model, model.config.eos_token_ids, group)
    steps = StepReceiver(spec.steps_memfd, spec.steps_socket, spec.rank - 1, spec.size - 1)
    log.info("rank %d of %d ready on %s", spec.rank, spec.size, device)
    sampled = None
    while (data := steps.receive()) is not None:
        sampled = runner.follow(StepPlan.decode(data), sampled)
    group.close()


if __name__ == "__main__":
    sys.exit(main())
