"""Tensor parallelism on the CPU (gloo, 2 ranks): the same greedy tokens and, within float32's rounding,
the same logits as one rank, on tiny random Llamas that stress the split (a padded vocabulary shard, one
KV head copied on both ranks) and on the embedded SmolLM2 (uneven heads, 6 + 3) through
`pyinfer generate`; a model that cannot be split is refused before any rank starts; the CPU's fused
decode layer steps aside for a shard."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
import torch

from pyinfer.distributed import ParallelGroup
from pyinfer.engine.cpu_decode import FusedCpuDecode
from pyinfer.engine.llm import LLM
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers import quantization
from pyinfer.models.loader import load_model
from pyinfer.sampling_params import SamplingParams
from tests.conftest import TINY_LLAMA, write_random_llama

PROMPTS = [[1, 5, 7, 9, 11], [1, *range(20, 60)], [1, 300, 2, 17]]
GREEDY = SamplingParams(temperature=0, max_tokens=12, logprobs=4, ignore_eos=True)
TINY_VARIANTS = {
    "padded-vocab": dict(vocab_size=321, tie_word_embeddings=True),  # 161 rows a rank, the last one padding
    "one-kv-head": dict(num_key_value_heads=1, tie_word_embeddings=False),  # copied on both ranks
}


def generate(
    model: str | None, tp: int, prompts, params: SamplingParams = GREEDY, overlap: bool = False, **engine_args
):
    """overlap: the GPU's overlapped scheduling, on the CPU: rank 1 patches the tokens in flight from the
    ids rank 0 broadcast."""
    llm = LLM(
        model, dtype="float32", device="cpu", tensor_parallel_size=tp, kv_cache_memory_gb=0.05, **engine_args
    )
    llm.engine.overlap = overlap
    try:
        return [out.outputs[0] for out in llm.generate(prompts, params)]
    finally:
        llm.close()


def assert_same_tokens_and_close_logprobs(one_rank, two_ranks, atol: float) -> None:
    for a, b in zip(one_rank, two_ranks, strict=True):
        assert a.token_ids == b.token_ids
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            assert [t for t, _ in x.top] == [t for t, _ in y.top]
            assert max(abs(p - q) for (_, p), (_, q) in zip(x.top, y.top, strict=True)) < atol


def tp_workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "pyinfer.engine.tp_worker" in p.cmdline()]


@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_two_ranks_match_one_on_tiny_llamas(variant, tmp_path):
    folder = write_random_llama(tmp_path, std=0.2, **{**TINY_LLAMA, **TINY_VARIANTS[variant]})
    one, two = (generate(str(folder), tp, PROMPTS) for tp in (1, 2))
    assert_same_tokens_and_close_logprobs(one, two, atol=1e-4)
    assert_same_tokens_and_close_logprobs(one, generate(str(folder), 2, PROMPTS, overlap=True), atol=1e-4)
    assert not tp_workers()  # closing the engine stopped rank 1


def test_dummy_weights_are_the_same_model_at_every_tensor_parallel_size(tmp_path):
    """Random weights drawn per checkpoint name: a benchmark's TP=2 runs TP=1's model (issue 28's check)."""
    config = write_random_llama(tmp_path, std=0.2, **TINY_LLAMA) / "config.json"
    one, two = (generate(str(config), tp, PROMPTS, load_format="dummy") for tp in (1, 2))
    assert_same_tokens_and_close_logprobs(one, two, atol=1e-4)


def test_prompt_chunks_under_overlapped_steps_on_one_and_two_ranks(tmp_path):
    """A step of prompt chunks alone samples nothing: the step after it, launched before its ids would
    reach the host, has none to patch in (a prompt longer than the token budget on a GPU)."""
    folder = write_random_llama(tmp_path, std=0.2, **TINY_LLAMA)
    for prompts in ([PROMPTS[1]], PROMPTS):  # the 41-token prompt alone: its first steps sample nothing
        in_turn = generate(str(folder), 1, prompts)
        for tp in (1, 2):
            chunked = generate(str(folder), tp, prompts, overlap=True, max_num_batched_tokens=16)
            assert_same_tokens_and_close_logprobs(in_turn, chunked, atol=1e-4)


def test_a_failure_on_rank_0_mid_step_stops_the_group_and_later_steps_refuse(tmp_path, monkeypatch):
    """Rank 1 ran the step's collectives without rank 0's: the group cannot step again, and says so."""
    folder = write_random_llama(tmp_path, std=0.2, **TINY_LLAMA)
    llm = LLM(str(folder), dtype="float32", device="cpu", tensor_parallel_size=2, kv_cache_memory_gb=0.05)
    try:
        llm.generate([PROMPTS[0]], GREEDY)

        def fail(*args):
            raise RuntimeError("injected sampler failure")

        monkeypatch.setattr(llm.engine.runner, "sampler", fail)
        with pytest.raises(RuntimeError, match="injected"):
            llm.generate([PROMPTS[1]], GREEDY)
        assert not tp_workers()
        with pytest.raises(RuntimeError, match="tensor-parallel group was stopped"):
            llm.generate([PROMPTS[0]], GREEDY)
    finally:
        llm.close()


def test_two_ranks_match_one_on_smollm2_and_through_pyinfer_generate(smollm2_llm):
    prompts = ["The capital of France is", "def fibonacci(n):"]
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=5)
    one = [out.outputs[0] for out in smollm2_llm.generate(prompts, params)]
    two = generate(None, 2, prompts, params)
    assert_same_tokens_and_close_logprobs(one, two, atol=1e-3)
    cli = [sys.executable, "-m", "pyinfer", "generate", "--dtype", "float32", "--device", "cpu"]
    cli += ["--tensor-parallel-size", "2", "--max-tokens", "16", "--temperature", "0", prompts[0]]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert one[0].text.strip() in result.stdout and one[0].text.strip()


def test_a_model_that_cannot_be_split_is_refused_before_any_rank_starts(tmp_path):
    folder = write_random_llama(tmp_path, std=0.2, **TINY_LLAMA)  # 4 heads over 2 KV heads
    with pytest.raises(ValueError, match="cannot be split across 3 ranks"):
        LLM(str(folder), dtype="float32", device="cpu", tensor_parallel_size=3)
    assert not tp_workers()


@pytest.mark.skipif(cpu_ops() is None, reason="no C++ compiler: the fused decode layer is not built")
def test_the_fused_cpu_decode_layer_steps_aside_for_a_shard(smollm2_path, monkeypatch):
    monkeypatch.setattr(quantization, "integer_kernels_wanted", lambda: True)  # 4-bit blocks it can run

    def model(group: ParallelGroup):
        return load_model(
            smollm2_path, "gguf", torch.float32, torch.device("cpu"), keep_file_blocks=True, group=group
        )

    assert FusedCpuDecode.for_model(model(ParallelGroup())) is not None
    assert FusedCpuDecode.for_model(model(ParallelGroup(0, 2))) is None
