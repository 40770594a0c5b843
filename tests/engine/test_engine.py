"""Engine behaviour on the embedded SmolLM2: chunked prefill, preemption, prefix caching, n, seeds, stops."""

from __future__ import annotations

import pytest

from pyinfer import SamplingParams
from pyinfer.config import EngineConfig
from pyinfer.engine.llm import LLM
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput

LONG_TEXTS = [
    "In the beginning of the nineteenth century, the small harbour town was known for its fishing fleet, "
    "its narrow streets and the old lighthouse that stood on the cliffs above the bay.",
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to "
    "synthesize foods from carbon dioxide and water.",
    "The recipe calls for two cups of flour, one cup of sugar, three eggs, a pinch of salt and",
    "def quicksort(items):\n    if len(items) <= 1:\n        return items\n    pivot = items[0]\n",
]
GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def token_ids(outs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outs]


@pytest.fixture(scope="module")
def plain(smollm2_llm) -> list[list[int]]:
    """The reference: the default engine, prompts batched, no chunking, no preemption."""
    return token_ids(smollm2_llm.generate(LONG_TEXTS, GREEDY))


def test_chunked_prefill_gives_the_same_tokens(plain):
    llm = LLM(dtype="float32", device="cpu", max_num_batched_tokens=16, kv_cache_memory_gb=0.1)
    assert token_ids(llm.generate(LONG_TEXTS, GREEDY)) == plain


def test_preemption_gives_the_same_tokens(plain, smollm2_llm):
    lengths = [len(smollm2_llm.tokenizer.encode(t)) + 16 for t in LONG_TEXTS]
    blocks_needed = sum(-(-n // 16) for n in lengths)
    llm = LLM(dtype="float32", device="cpu", num_kv_blocks=max(lengths) // 16 + 2)
    assert llm.engine.block_manager.num_blocks < blocks_needed
    assert token_ids(llm.generate(LONG_TEXTS, GREEDY)) == plain
    assert llm.engine.scheduler.num_preemptions > 0


def test_prefix_cache_hit_skips_cached_tokens(smollm2_llm):
    engine = smollm2_llm.engine
    prompt = smollm2_llm.tokenizer.encode(" ".join(LONG_TEXTS))
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    first = smollm2_llm.generate([prompt], params)[0]
    before = engine.num_tokens_computed
    second = smollm2_llm.generate([prompt], params)[0]
    computed = engine.num_tokens_computed - before
    cached = (len(prompt) - 1) // 16 * 16
    assert first.num_cached_tokens == 0 or first.num_cached_tokens < cached
    assert second.num_cached_tokens == cached
    assert computed == len(prompt) - cached + 3  # the uncached tail, then 3 decode steps
    assert second.outputs[0].token_ids == first.outputs[0].token_ids


def test_n_choices_share_the_prompt_blocks(smollm2_llm):
    engine = smollm2_llm.engine
    prompt = smollm2_llm.tokenizer.encode("A question nobody asked before: " + LONG_TEXTS[0])
    before = engine.num_tokens_computed
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=4, ignore_eos=True)
    out = smollm2_llm.generate([prompt], params)
    tail = len(prompt) - (len(prompt) - 1) // 16 * 16
    assert out[0].num_cached_tokens == 0
    # choice 0 computes the prompt; choices 1 and 2 only the partial last block; then 3 decode steps each
    assert engine.num_tokens_computed - before == len(prompt) + 2 * tail + 3 * 3
    texts = [c.token_ids for c in out[0].outputs]
    assert len(texts) == 3 and len({tuple(t) for t in texts}) > 1


def test_seeded_sampling_is_reproducible_across_batch_compositions(smollm2_llm):
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=16, ignore_eos=True)
    alone = smollm2_llm.generate(["Tell me a story about a dragon."], params)[0].outputs[0].token_ids
    crowd_params = [SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)] * 3
    crowd = smollm2_llm.generate(
        [LONG_TEXTS[0], "Tell me a story about a dragon.", LONG_TEXTS[2], LONG_TEXTS[3]],
        [crowd_params[0], params, *crowd_params[1:]],
    )
    assert crowd[1].outputs[0].token_ids == alone
    other = SamplingParams(temperature=1.0, top_p=0.95, seed=99, max_tokens=16, ignore_eos=True)
    assert smollm2_llm.generate(["Tell me a story about a dragon."], other)[0].outputs[0].token_ids != alone


def test_stop_conditions(smollm2_llm):
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    out = smollm2_llm.chat(chat, SamplingParams(temperature=0, max_tokens=64))[0].outputs[0]
    assert out.finish_reason == "stop" and "Paris" in out.text and len(out.token_ids) < 64
    eos_out = smollm2_llm.chat(chat, SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))[
        0
    ].outputs[0]
    assert eos_out.finish_reason == "length" and len(eos_out.token_ids) == 64
    first = out.token_ids[0]
    stopped = smollm2_llm.chat(chat, SamplingParams(temperature=0, max_tokens=64, stop_token_ids=[first]))
    assert stopped[0].outputs[0].token_ids == [first] and stopped[0].outputs[0].finish_reason == "stop"
    text_stop = smollm2_llm.chat(chat, SamplingParams(temperature=0, max_tokens=64, stop=["Paris"]))
    assert text_stop[0].outputs[0].text == out.text.split("Paris")[0]
    assert text_stop[0].outputs[0].finish_reason == "stop"
    assert smollm2_llm.engine.block_manager.usage == 0.0


def test_abort_frees_every_block(smollm2_llm):
    engine = smollm2_llm.engine
    prompt = smollm2_llm.tokenizer.encode(LONG_TEXTS[1])
    engine.add_request("to-abort", prompt, SamplingParams(n=2, max_tokens=50))
    for _ in range(3):
        engine.step()
    assert engine.block_manager.usage > 0
    engine.abort("to-abort")
    assert engine.block_manager.usage == 0.0 and not engine.has_unfinished()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("temperature", -0.5),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", 1.5),
        ("presence_penalty", 3.0),
        ("frequency_penalty", -2.5),
        ("repetition_penalty", 0.0),
        ("logit_bias", {5: 200.0}),
        ("logprobs", 21),
        ("stop", [""]),
    ],
)
def test_invalid_sampling_params_name_the_field(field, value):
    with pytest.raises(SamplingParamsError) as err:
        SamplingParams(**{field: value})
    assert err.value.param == field and field in str(err.value)


@pytest.mark.parametrize("whitespace", [0, 1025])
def test_a_json_whitespace_bound_out_of_range_names_the_constraint_s_field(whitespace):
    constraint = StructuredOutput(kind="json", spec="{}", param="response_format", max_whitespace=whitespace)
    with pytest.raises(SamplingParamsError, match="max_whitespace must be from 1 to 1024") as err:
        SamplingParams(structured=constraint)
    assert err.value.param == "response_format"


def test_min_tokens_above_max_tokens_is_rejected():
    with pytest.raises(SamplingParamsError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)


def test_engine_rejects_bad_requests(smollm2_llm):
    engine = smollm2_llm.engine
    vocab = engine.model_config.vocab_size
    cases = [
        ([], SamplingParams(), "prompt"),
        ([1, vocab], SamplingParams(), "prompt"),
        ([1, 2], SamplingParams(logit_bias={vocab: 1.0}), "logit_bias"),
        ([1] * 10, SamplingParams(max_tokens=engine.max_model_len), "max_tokens"),
    ]
    for prompt, params, field in cases:
        with pytest.raises(SamplingParamsError) as err:
            engine.add_request("bad", prompt, params)
        assert err.value.param == field
    assert str(engine.max_model_len) in str(err.value)
    assert not engine.has_unfinished()


def test_default_cpu_dtype_answers_correctly():
    """The default CPU path (whichever kernels and dtype this CPU gets) still gets the facts right. Asked
    without "Answer in one sentence.", the file's own exact path opens on a near-tie between "The" and
    "L'Étoile" (0.08 logits) that any rounding may tip (bench/results/2026-12-04-cpu-int4-accuracy.md)."""
    llm = LLM(device="cpu", kv_cache_memory_gb=0.1)
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    assert "Paris" in llm.chat(chat, SamplingParams(temperature=0, max_tokens=20))[0].outputs[0].text


def test_pytorch_fallback_gives_the_kernels_tokens(tiny_llama, monkeypatch):
    """Without the C++ CPU kernels (no compiler), the PyTorch paths serve the same greedy tokens (fp32:
    the two round differently in bf16). The int4 matmuls stay on torch's kernels in both runs: ours round
    the activations to int8 (tests/kernels and tests/engine/test_int4.py hold them to their references)."""
    from pyinfer.kernels.cpu import cpu_ops
    from pyinfer.layers import quantization
    from pyinfer.layers.quantization import int4_unpack_matches_torch

    monkeypatch.setattr(quantization, "integer_kernels_wanted", lambda: False)

    prompts = [list(range(3, 40)), list(range(50, 180))]  # the second one prefills on the dense int4 path
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)

    def run() -> list[list[int]]:
        llm = LLM(
            str(tiny_llama), device="cpu", dtype="float32", quantization="int4", kv_cache_memory_gb=0.05
        )
        return token_ids(llm.generate(prompts, [params] * 2))

    with_kernels = run()
    monkeypatch.setenv("PYINFER_DISABLE_CPU_KERNELS", "1")
    cpu_ops.cache_clear()
    int4_unpack_matches_torch.cache_clear()
    try:
        assert cpu_ops() is None
        assert run() == with_kernels
    finally:
        monkeypatch.delenv("PYINFER_DISABLE_CPU_KERNELS")
        cpu_ops.cache_clear()
        int4_unpack_matches_torch.cache_clear()


def test_unset_batch_limits_follow_the_device(smollm2_llm):
    config = smollm2_llm.engine.config  # the fixture sets 16 sequences and leaves the token budget
    assert (config.max_num_seqs, config.max_num_batched_tokens) == (16, 2048)
    gpu = EngineConfig(max_num_seqs=8).for_device("cuda")
    assert (gpu.max_num_seqs, gpu.max_num_batched_tokens) == (8, 8192)


def test_warm_up_takes_every_kind_of_step_and_leaves_the_engine_as_it_found_it(tiny_llama):
    """The server's engine runs throwaway requests at start-up through the steps clients' requests take
    (so that on the GPU no kernel variant compiles on a client's time): nothing of them may remain."""
    from pyinfer.engine.engine import WARM_UP_TOKENS, LLMEngine

    engine = LLMEngine(EngineConfig(str(tiny_llama), device="cpu", dtype="float32", num_kv_blocks=16))
    free = engine.block_manager.num_free_blocks
    outputs, batches = [], []
    step, schedule = engine.step, engine.scheduler.schedule
    engine.step = lambda: outputs.extend(step()) or outputs
    engine.scheduler.schedule = lambda: batches.append(batch := schedule()) or batch
    engine.warm_up()
    shapes = {(b.num_decodes, len(b.seqs) - b.num_decodes) for b in batches if b.seqs}
    assert (0, 1) in shapes  # a prompt alone
    mixed = {decodes for decodes, prefills in shapes if decodes and prefills}
    assert {d % 2 for d in mixed} == {0, 1} and any(p > 1 for d, p in shapes if d)  # beside odd and even
    assert any(d > 1 and not p for d, p in shapes)  # decodes alone
    finished = [out for out in outputs if out.finish_reason is not None]
    assert len(finished) == 5 and {out.finish_reason for out in finished} == {"length"}
    assert sum(len(out.new_token_ids) for out in outputs) == 5 * WARM_UP_TOKENS
    assert any(out.logprobs for out in outputs) and any(
        not out.logprobs for out in outputs
    )  # sampled, greedy
    stats = engine.stats()
    assert not engine.has_unfinished() and not engine._requests
    assert engine.block_manager.num_free_blocks == free
    assert stats["num_tokens_computed"] == stats["prefix_cache_queries"] == stats["prefix_cache_hits"] == 0
