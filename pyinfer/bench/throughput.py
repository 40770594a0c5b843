"""Offline throughput: many requests through the engine's continuous batching."""

from __future__ import annotations

import argparse
import random
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
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128, help="mean prompt length")
    p.add_argument("--output-len", type=int, default=128, help="mean output length")
    p.add_argument(
        "--range-ratio",
        type=float,
        default=0.0,
        help="lengths drawn uniformly in mean*(1±ratio); 0: all equal",
    )
    p.add_argument(
        "--compare-hf",
        action="store_true",
        help="also time transformers.generate in batches of --max-num-seqs on the same prompts",
    )
    p.add_argument(
        "--hf-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the transformers reference (its usual CPU set-up is float32)",
    )
    p.add_argument("--output-json", default=None)


def _lengths(n: int, mean: int, ratio: float, rng: random.Random) -> list[int]:
    lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
    return [rng.randint(lo, hi) for _ in range(n)]


def main(args: argparse.Namespace) -> None:
    llm = make_llm(args)
    max_num_seqs = llm.engine.config.max_num_seqs
    rng = random.Random(0)
    in_lens = _lengths(args.num_prompts, args.input_len, args.range_ratio, rng)
    out_lens = _lengths(args.num_prompts, args.output_len, args.range_ratio, rng)
    prompts = random_prompts(args.num_prompts, in_lens, llm.engine.model_config.vocab_size)
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in out_lens]
    # Warm-up on a slice of the workload: compiles the kernels' variants for these shapes.
    warm = prompts[: min(max_num_seqs, len(prompts))]
    llm.generate(warm, [SamplingParams(max_tokens=8, ignore_eos=True)] * len(warm))
    llm.engine.block_manager.enable_prefix_caching = False
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    in_tokens = sum(in_lens)
    result = {
        "machine": describe_machine(),
        "num_prompts": args.num_prompts,
        "max_num_seqs": max_num_seqs,
        "seconds": elapsed,
        "requests_per_s": args.num_prompts / elapsed,
        "output_tokens_per_s": out_tokens / elapsed,
        "total_tokens_per_s": (out_tokens + in_tokens) / elapsed,
        "preemptions": llm.engine.scheduler.num_preemptions,
    }
    print(
        f"\noffline throughput on {result['machine']}: {args.num_prompts} requests, "
        f"prompt ~{args.input_len}, output ~{args.output_len}, max {max_num_seqs} sequences a batch"
    )
    print(
        f"pyinfer:      {result['requests_per_s']:.2f} req/s, {result['output_tokens_per_s']:.1f} output tok/s, "
        f"{result['total_tokens_per_s']:.1f} total tok/s, {elapsed:.1f}s"
    )
    if args.compare_hf:
        hf = load_hf_reference(llm, args.hf_dtype)
        batch = max_num_seqs
        hf_generate_seconds(hf, prompts[:batch], 2)  # warm-up
        hf_elapsed = sum(
            hf_generate_seconds(hf, prompts[i : i + batch], max(out_lens[i : i + batch]))
            for i in range(0, args.num_prompts, batch)
        )
        hf_out = sum(
            max(out_lens[i : i + batch]) * len(prompts[i : i + batch]) for i in range(0, len(prompts), batch)
        )
        result.update(
            hf_output_tokens_per_s=hf_out / hf_elapsed,
            speedup=result["output_tokens_per_s"] / (hf_out / hf_elapsed),
        )
        print(
            f"transformers: {hf_out / hf_elapsed:.1f} output tok/s (generate, batches of {batch}), "
            f"{hf_elapsed:.1f}s"
        )
        print(f"output-throughput speed-up over transformers: {result['speedup']:.2f}x")
    peaks = measure_peaks(llm.engine.device)
    if peaks is not None:
        peaks = peaks.times(llm.engine.config.tensor_parallel_size)  # the group's GPUs side by side
        costs = ModelCosts.of(llm.engine.model_config, next(llm.engine.runner.model.parameters()).dtype)
        # Ideal: full batches of max_num_seqs; every decode step reads the weights once and each
        # sequence's KV; every token costs its matmul FLOPs.
        steps = out_tokens / min(max_num_seqs, args.num_prompts)
        kv_reads = sum(i * o + o * (o + 1) // 2 for i, o in zip(in_lens, out_lens, strict=True))
        total_bytes = steps * costs.weight_bytes + kv_reads * costs.kv_bytes_per_token
        total_flops = (
            sum(costs.prefill_flops(n) for n in in_lens)
            + out_tokens * 2 * (costs.linear_params + costs.head_params)
            + costs.attn_flops_per_pair * kv_reads
        )
        bound_s = max(total_bytes / peaks.bandwidth, total_flops / peaks.flops)
        print(
            f"measured peaks: {peaks.bandwidth / 1e12:.2f} TB/s copy, {peaks.flops / 1e12:.0f} TFLOP/s bf16 matmul"
        )
        print(
            f"roofline: {total_bytes / 1e9:.0f} GB moved, {total_flops / 1e12:.0f} TFLOP -> at least {bound_s:.2f}s"
        )
        print(bound_line("output tokens/s", result["output_tokens_per_s"], out_tokens / bound_s, "tok/s"))
        print(
            bound_line(
                "total tokens/s", result["total_tokens_per_s"], (out_tokens + in_tokens) / bound_s, "tok/s"
            )
        )
        result.update(roofline_seconds=bound_s, roofline_output_tokens_per_s=out_tokens / bound_s)
    write_json(args.output_json, result)
