"""The CPU int4 path (GGUF Q4 blocks kept 4-bit, int8 LM head) against the exact fp32 path: bf16 activations
on torch's int4/int8 kernels, and our integer kernels in the default dtype, which is fp32 wherever they run
(what an AVX2-only CPU runs). Both families are tested on every CPU that can run them."""

from __future__ import annotations

import pytest
import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers import quantization
from pyinfer.layers.quantization import Int4Blocks, Int4Weights, Int8Weights
from tests.engine.test_parity import our_prompt_logits

TEXTS = [
    "The history of the Roman Empire spans many centuries, beginning with the founding of the city and "
    "continuing through the republic, the principate and the long decline of the western provinces, while",
    "def merge_sort(values):\n    if len(values) <= 1:\n        return values\n    middle = len(values) // 2\n"
    "    left = merge_sort(values[:middle])\n    right = merge_sort(values[middle:])\n    return merge(left, right)",
    "<|im_start|>user\nExplain why the sky is blue in two sentences, for a child who is seven years old and "
    "curious about science.<|im_end|>\n<|im_start|>assistant\nThe sky looks blue because sunlight",
    "Ingredients: two cups of flour, a teaspoon of baking soda, half a cup of butter, three eggs, a cup of "
    "sugar, vanilla and a pinch of salt. Method: first preheat the oven, then mix the dry ingredients",
]
# Teacher-forced, every position of the prompts. From 64 rows (BLOCKS_DENSE_MIN_ROWS) the 4-bit linears
# run as dense GEMMs; below it our integer kernels round the activations to int8 per group of 32, the
# larger error (bench/results/2026-12-04-cpu-int4-accuracy.md has the measured figures).
SHORT, LONG = 40, 64  # prompt lengths: integer kernels (where chosen) and dense GEMMs
# 40 tokens: 0.944 on the AVX2 EPYC, 0.919-0.925 with AVX-512 VNNI (the same integer products, float sums
# in another order; bench/results/2026-12-05-cpu-avx512.md)
TOP1_AGREEMENT = {SHORT: 0.90, LONG: 0.96}
LOGITS_REL_ERR = {SHORT: 0.15, LONG: 0.05}
CLEAR_MARGIN = {SHORT: 1.0, LONG: 0.5}  # where the exact top-1 leads by this many logits, ours must pick it


@pytest.fixture(scope="module", params=[("bfloat16", "torch"), ("auto", "integer")], ids=["torch", "integer"])
def int4_llm(request) -> LLM:
    dtype, kernels = request.param
    if kernels == "integer" and cpu_ops() is None:
        pytest.skip("no C++ compiler: the integer kernels are not built")
    with pytest.MonkeyPatch.context() as patch:  # the kernels are chosen as the weights are packed
        patch.setattr(quantization, "integer_kernels_wanted", lambda: kernels == "integer")
        llm = LLM(device="cpu", dtype=dtype, kv_cache_memory_gb=0.1)
    model = llm.engine.runner.model
    assert isinstance(model.layers[0].mlp.down_proj.quantized, Int4Blocks) == (kernels == "integer")
    if kernels == "integer":  # "auto" is fp32 wherever the integer kernels run, bf16 CPUs included
        assert model.embed_tokens.weight.dtype == torch.float32
    return llm


def test_the_kv_cache_is_fp16_under_4bit_weights_in_fp32_and_the_exact_path_stays_fp32(int4_llm, smollm2_llm):
    """--kv-cache-dtype auto: half the bytes each decode step reads where the weights are 4-bit and the
    activations fp32; the model's own dtype otherwise (bf16 activations, or the unquantized fp32 path)."""
    model_dtype = int4_llm.engine.runner.dtype
    expected = torch.float16 if model_dtype == torch.float32 else model_dtype
    for llm, kv_dtype in ((int4_llm, expected), (smollm2_llm, torch.float32)):
        attn = llm.engine.runner.model.attention_layers()[0]
        assert llm.engine.runner.kv_dtype == kv_dtype and attn.kv_cache.dtype == kv_dtype


def test_gguf_q4_weights_stay_int4_and_the_lm_head_is_int8(int4_llm):
    model = int4_llm.engine.runner.model
    layer = model.layers[0]
    for linear in (
        layer.self_attn.qkv_proj,
        layer.self_attn.o_proj,
        layer.mlp.gate_up_proj,
        layer.mlp.down_proj,
    ):
        assert isinstance(linear.quantized, Int4Weights) and linear.weight is None
    # SmolLM2 ties the head to the embedding: the head is an int8 copy, the lookup keeps its dense table
    assert isinstance(model.lm_head.quantized, Int8Weights) and model.lm_head.weight is None
    assert model.embed_tokens.weight.dtype in (torch.bfloat16, torch.float32)  # "auto": the CPU's choice


@pytest.mark.parametrize("length", [SHORT, LONG])
def test_int4_logits_and_top1_agree_with_the_exact_path(int4_llm, smollm2_llm, length):
    agree, total = 0, 0
    for text in TEXTS:
        prompt = smollm2_llm.tokenizer.encode(text + " " + text)[:length]
        assert len(prompt) == length
        exact = our_prompt_logits(smollm2_llm, prompt).float()
        quant = our_prompt_logits(int4_llm, prompt).float()
        rel = ((quant - exact).norm() / exact.norm()).item()
        assert rel < LOGITS_REL_ERR[length], rel
        same = quant.argmax(-1) == exact.argmax(-1)
        agree += same.sum().item()
        total += len(prompt)
        # int4 rounding may flip near-ties (margins of 0.003-0.33 seen on AVX2 and AVX-512), never a clear lead
        top2 = exact.topk(2, dim=-1).values
        clear = top2[:, 0] - top2[:, 1] > CLEAR_MARGIN[length]
        assert same[clear].all(), (top2[:, 0] - top2[:, 1])[clear & ~same]
    assert agree / total >= TOP1_AGREEMENT[length], agree / total


def test_int4_path_answers_paris(int4_llm):
    # Asked bare, the file's own weights open the answer with a near-tie ("The" leads "L" by 0.08 logits,
    # and "L" goes on "L'Étoile, la Marseillaise, ..."), which any rounding may flip; asked for a
    # sentence, every token of the exact path's answer leads by 0.86 logits or more.
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    assert "Paris" in int4_llm.chat(chat, SamplingParams(temperature=0, max_tokens=20))[0].outputs[0].text


def test_fused_cpu_decode_layers_give_what_the_python_layers_give(int4_llm, monkeypatch):
    """On 4-bit blocks each layer of a decode step is one C++ call (decode_layer): the same kernels in the
    same order as the Python layers, so the tokens and their logprobs are the same to the bit."""
    if not isinstance(int4_llm.engine.runner.model.layers[0].mlp.down_proj.quantized, Int4Blocks):
        pytest.skip("torch's int4 kernels: the layers run in Python")
    monkeypatch.setattr(int4_llm.engine.block_manager, "enable_prefix_caching", False)  # same prefills twice
    runner = int4_llm.engine.runner
    assert runner.fused_decode is not None  # the runner's hook, chosen at load
    prompts = [text[: 40 + 30 * i] for i, text in enumerate(TEXTS[:3])]  # a decode batch of three lengths
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=2)
    calls = []
    fused_layer = runner.fused_decode.decode_layer
    monkeypatch.setattr(
        runner.fused_decode, "decode_layer", lambda *args: calls.append(1) or fused_layer(*args)
    )
    fused = int4_llm.generate(prompts, params)
    assert len(calls) >= 15 * len(runner.model.layers)  # every decode step, every layer
    monkeypatch.setattr(runner, "fused_decode", None)
    python = int4_llm.generate(prompts, params)
    for a, b in zip(fused, python, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert a.outputs[0].logprobs == b.outputs[0].logprobs


def test_a_decode_step_of_64_sequences_runs_the_fused_layers_too(int4_llm, monkeypatch):
    """The CPU's default batch: its decode steps take the integer kernels, not the prompts' dense GEMM."""
    if not isinstance(int4_llm.engine.runner.model.layers[0].mlp.down_proj.quantized, Int4Blocks):
        pytest.skip("torch's int4 kernels: the layers run in Python")
    runner = int4_llm.engine.runner
    rows = []
    fused_layer = runner.fused_decode.decode_layer
    monkeypatch.setattr(
        runner.fused_decode, "decode_layer", lambda x, *args: rows.append(x.shape[0]) or fused_layer(x, *args)
    )
    prompts = [f"Item {i}: the colour" for i in range(64)]
    int4_llm.generate(prompts, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert rows.count(64) >= 2 * len(runner.model.layers)
