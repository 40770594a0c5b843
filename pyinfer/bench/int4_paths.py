"""Which CPU path serves 4-bit weights faster on this processor, end to end: our integer kernels (with
the fused C++ decode layer) or torch's int4 kernels (with the Python layers). Both decode the embedded
model at batch 1 and at 16 sequences; the path with the lower total step time is kept beside the
kernels' build, where `integer_kernels_wanted` reads it. `make install` runs this where torch has
fast int4 kernels (AVX-512); on AVX2 ours are chosen without measuring (torch's have no fast path).

Usage: python -m pyinfer.bench.int4_paths [--force]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch

from pyinfer.engine.llm import LLM
from pyinfer.kernels.cpu import cpu_ops, integer_kernels_choice, record_integer_kernels_choice
from pyinfer.sampling_params import SamplingParams

STEPS = 32


def step_ms(batch: int) -> float:
    """Mean decode step of `batch` sequences on the embedded model, in the path the environment asks for."""
    llm = LLM(device="cpu", max_num_seqs=batch, kv_cache_memory_gb=0.2)
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=STEPS + 16, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"r{i}", [(17 * i + j) % 4000 + 100 for j in range(64)], params)
    while any(s.num_uncomputed_tokens > 1 for s in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(4):
        engine.step()
    start = time.perf_counter()
    for _ in range(STEPS):
        engine.step()
    elapsed = (time.perf_counter() - start) / STEPS * 1e3
    del llm, engine
    gc.collect()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="measure again even if a choice is kept")
    args = parser.parse_args()
    if cpu_ops() is None or torch.backends.cpu.get_cpu_capability() == "AVX2":
        print("int4 paths: nothing to choose on this processor")
        return
    if integer_kernels_choice() is not None and not args.force:
        print("int4 paths:", "ours" if integer_kernels_choice() else "torch's", "(measured before)")
        return
    measured = {}
    for name, flag in (("ours", "1"), ("torch", "0")):
        os.environ["PYINFER_INTEGER_KERNELS"] = flag
        for batch in (1, 16):
            measured[f"{name}_ms_batch{batch}"] = round(step_ms(batch), 3)
    del os.environ["PYINFER_INTEGER_KERNELS"]
    ours = measured["ours_ms_batch1"] + measured["ours_ms_batch16"] / 16
    theirs = measured["torch_ms_batch1"] + measured["torch_ms_batch16"] / 16
    record_integer_kernels_choice(ours <= theirs, measured)
    print("int4 paths (decode step ms):", measured, "->", "ours" if ours <= theirs else "torch's")


if __name__ == "__main__":
    main()
