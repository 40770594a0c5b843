"""Batch-1 latency: time to first token and decode speed for one request."""

from __future__ import annotations

import argparse
import statistics
import time

from pyinfer.bench.common import (
    describe_machine,
    hf_generate_seconds,
    load_hf_reference,
    make_llm,
    random_prompts,
    write_json,
)
from pyinfer.bench.roofline import ModelCosts, bound_line, measure_peaks
from pyinfer.sampling_params import SamplingParams


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument(
        "--compare-hf", action="store_true", help="also time transformers.generate on the same weights"
    )
    p.add_argument(
        "--hf-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the transformers reference (its usual CPU set-up is float32)",
    )
    p.add_argument("--output-json", default=None)


def run_once(llm, prompt: list[int], output_len: int) -> tuple[float, float]:
    """Returns (time to first token, decode tokens/s) of one request, measured from outside the engine."""
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    engine.add_request("latency", prompt, params)
    first = None
    while engine.has_unfinished():
        if engine.step() and first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return first - start, (output_len - 1) / (end - first)


def main(args: argparse.Namespace) -> None:
    llm = make_llm(args)
    prompt = random_prompts(1, [args.input_len], llm.engine.model_config.vocab_size)[0]
    run_once(llm, prompt, 8)  # warm-up
    llm.engine.block_manager.enable_prefix_caching = False  # every iteration prefills from scratch
    runs = [run_once(llm, prompt, args.output_len) for _ in range(args.iters)]
    ttft = statistics.median(r[0] for r in runs) * 1e3
    tps = statistics.median(r[1] for r in runs)
    result = {
        "machine": describe_machine(),
        "input_len": args.input_len,
        "output_len": args.output_len,
        "ttft_ms": ttft,
        "decode_tokens_per_s": tps,
    }
    rows = [("pyinfer", ttft, tps)]
    if args.compare_hf:
        hf = load_hf_reference(llm, args.hf_dtype)
        hf_generate_seconds(hf, [prompt], 4)  # warm-up
        hf_ttft = hf_generate_seconds(hf, [prompt], 1)
        total = hf_generate_seconds(hf, [prompt], args.output_len)
        hf_tps = (args.output_len - 1) / (total - hf_ttft)
        rows.append(("transformers", hf_ttft * 1e3, hf_tps))
        result.update(hf_ttft_ms=hf_ttft * 1e3, hf_decode_tokens_per_s=hf_tps, decode_speedup=tps / hf_tps)
    print(f"\nbatch-1 latency on {result['machine']}: prompt {args.input_len}, {args.output_len} new tokens")
    print(f"{'':14}{'TTFT ms':>10}{'decode tok/s':>14}")
    for name, t, s in rows:
        print(f"{name:14}{t:10.1f}{s:14.1f}")
    if args.compare_hf:
        print(f"decode speed-up over transformers: {result['decode_speedup']:.2f}x")
    peaks = measure_peaks(llm.engine.device)
    if peaks is not None:
        peaks = peaks.times(llm.engine.config.tensor_parallel_size)  # the group's GPUs side by side
        costs = ModelCosts.of(llm.engine.model_config, next(llm.engine.runner.model.parameters()).dtype)
        mid_context = args.input_len + args.output_len // 2
        step_bound = peaks.bandwidth / costs.decode_step_bytes([mid_context])
        prefill_bound = 1e3 * max(
            costs.prefill_flops(args.input_len) / peaks.flops,
            (costs.weight_bytes + costs.kv_bytes_per_token * args.input_len) / peaks.bandwidth,
        )
        print(
            f"measured peaks: {peaks.bandwidth / 1e12:.2f} TB/s copy, {peaks.flops / 1e12:.0f} TFLOP/s bf16 matmul"
        )
        print(bound_line("batch-1 decode", tps, step_bound, "tok/s"))
        print(bound_line("time to first token", ttft, prefill_bound, "ms", higher_is_better=False))
        result.update(
            decode_bound_tokens_per_s=step_bound,
            ttft_bound_ms=prefill_bound,
            peak_bandwidth=peaks.bandwidth,
            peak_flops=peaks.flops,
        )
    write_json(args.output_json, result)
