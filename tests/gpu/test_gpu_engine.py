"""The whole GPU path (Triton kernels, CUDA graphs) against the reference backend and transformers."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# Our bf16 logits may be at most this much further from transformers' fp32 logits than
# transformers' own bf16 logits are (relative error of the whole tensor).
BF16_ERROR_RATIO = 1.5


@pytest.fixture(autouse=True)
def _free_engines():
    """Each test's engines (their KV caches take most of the GPU) freed before the next sizes its own."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory) -> Path:
    """A mid-sized random Llama (GQA 4:1, llama3 rope) with peaked logits, saved by transformers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=4096,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=6,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 512,
        },
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08 if "embed" in name or "lm_head" in name else 0.04)
    folder = tmp_path_factory.mktemp("random-llama")
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder


PROMPT_LENS = [5, 17, 40, 100, 333, 1000]


def prompts(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(10, vocab, (n,), generator=gen).tolist() for n in PROMPT_LENS]


def test_triton_and_graphs_match_reference_backend(random_llama):
    """In fp32 (exact dots in our kernels), so that near-ties of a random model cannot flip a token;
    bf16 numerics are checked against transformers below."""
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    fast = LLM(str(random_llama), device="cuda", dtype="float32", max_num_seqs=8)
    assert fast.engine.runner.graphs is not None and fast.engine.runner.backend.name == "triton"
    ps = prompts(4096)
    fast_ids = [o.outputs[0].token_ids for o in fast.generate(ps, params)]
    # One at a time: prefill graphs, then batch-1 decode graphs, whose linears are the fused GEMVs
    # (norm, SiLU and LM head inside). Prompts 5 and 2, the second time, and `extended` hit the
    # prefix cache: the graph attends to cached blocks. Prompt 5's 8-token chunk pads its graph with
    # rows of prompt 2's: they must write no KV, or prompt 2's cached blocks go wrong.
    extended = ps[5][:700] + ps[3]
    alone = [ps[0], ps[1], ps[2], ps[5], ps[0], extended, ps[2]]
    runs = _count_calls(fast.engine.runner.graphs.prefill, "replay")
    alone_ids = [fast.generate([p], params)[0].outputs[0].token_ids for p in alone]
    assert runs == [len(alone) - 1]  # prompt 1: one block cached, its 1-token chunk runs as a decode
    # seeded sampling through the non-blocking uploads of the sampler's parameters: reproducible
    sampled = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.05, seed=7, max_tokens=32)
    first, again = (fast.generate(ps[:3], sampled) for _ in range(2))
    assert [o.outputs[0].token_ids for o in first] == [o.outputs[0].token_ids for o in again]
    del fast
    os.environ["PYINFER_DISABLE_TRITON"] = "1"
    try:
        ref = LLM(str(random_llama), device="cuda", dtype="float32", enforce_eager=True, max_num_seqs=8)
        assert ref.engine.runner.backend.name == "torch"
        ref_ids = [o.outputs[0].token_ids for o in ref.generate([*ps, extended], params)]
    finally:
        del os.environ["PYINFER_DISABLE_TRITON"]
    assert len({t for ids in ref_ids for t in ids}) > 20, "degenerate model: greedy output repeats"
    assert fast_ids == ref_ids[: len(ps)]
    assert alone_ids == [ref_ids[i] for i in (0, 1, 2, 5, 0, len(ps), 2)]


def _count_calls(obj, name: str) -> list[int]:
    """Counts calls of obj.name (the real method still runs); returns the live one-item count."""
    count = [0]
    method = getattr(obj, name)

    def counted(*args, **kwargs):
        count[0] += 1
        return method(*args, **kwargs)

    setattr(obj, name, counted)
    return count


def test_bf16_logits_match_transformers(random_llama):
    from transformers import AutoModelForCausalLM

    from tests.engine.test_parity import our_prompt_logits

    hf16 = AutoModelForCausalLM.from_pretrained(random_llama, dtype=torch.bfloat16).cuda().eval()
    hf32 = AutoModelForCausalLM.from_pretrained(random_llama, dtype=torch.float32).cuda().eval()
    llm = LLM(str(random_llama), device="cuda", enforce_eager=True)
    for prompt in prompts(4096)[2:5]:
        ids = torch.tensor([prompt], device="cuda")
        with torch.inference_mode():
            exact, theirs = hf32(ids).logits[0].float(), hf16(ids).logits[0].float()
        ours = our_prompt_logits(llm, prompt).float()
        ours_err = ((ours - exact).norm() / exact.norm()).item()
        theirs_err = ((theirs - exact).norm() / exact.norm()).item()
        agree = (ours.argmax(-1) == exact.argmax(-1)).float().mean().item()
        assert ours_err < BF16_ERROR_RATIO * theirs_err and agree > 0.95, (ours_err, theirs_err, agree)


@pytest.fixture(scope="module")
def llama_with_tokenizer(tmp_path_factory) -> Path:
    """A small random Llama with a byte-level BPE tokenizer trained here: grammars need a real vocabulary
    (ids 0-2 are <unk>, <s> and </s>, the model's end of sequence)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import write_random_llama

    folder = tmp_path_factory.mktemp("llama-with-tokenizer")
    corpus = [
        json.dumps({"name": f"user {i}", "id": i * 37, "tags": ["a", "bc", "def"][: i % 4]})
        for i in range(500)
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"])
    PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)
    return write_random_llama(
        folder,
        std=0.05,
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )


def test_constrained_decoding_with_grammar_workers_on_graphs(llama_with_tokenizer):
    """Greedy and seeded rows under a JSON schema, beside unconstrained ones, through CUDA graphs and
    overlapped steps: grammars kept in two worker processes (masks in pinned shared memory) give what
    grammars kept in the engine's process give, and every constrained reply validates."""
    import jsonschema

    from pyinfer.sampling_params import StructuredOutput

    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["cat", "dog"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
        },
        "required": ["kind", "n"],
        "additionalProperties": False,
    }
    constraint = StructuredOutput(kind="json", spec=json.dumps(schema))
    params = [
        SamplingParams(
            temperature=1.0 if i % 3 == 1 else 0.0,
            seed=i,
            max_tokens=200,  # a random model writes whitespace to its bound of 16 in every gap
            structured=None if i % 3 == 2 else constraint,
        )
        for i in range(24)
    ]
    prompts = [[1, *range(10 + i, 30 + 2 * i)] for i in range(24)]
    texts = {}
    for workers in (0, 2):
        llm = LLM(
            str(llama_with_tokenizer),
            device="cuda",
            dtype="bfloat16",
            gpu_memory_utilization=0.3,
            grammar_workers=workers,
        )
        outputs = [r.outputs[0] for r in llm.generate(prompts, params)]
        llm.engine.close()
        del llm
        gc.collect()  # this engine's KV cache freed before the next one sizes its own
        texts[workers] = [o.text for o in outputs]
        for out, p in zip(outputs, params, strict=True):
            if p.structured is not None:
                assert out.finish_reason == "stop", out.text
                jsonschema.validate(json.loads(out.text), schema)
    assert texts[2] == texts[0]


def test_pinned_masks_dropped_unclosed_leave_no_registration_behind():
    """Grammar masks registered with CUDA and dropped without close (an engine never closed): the next
    ones map where they were, register, and the next kernel launches; a registration CUDA refuses (the
    same range twice) leaves no error behind for that launch either."""
    from pyinfer.engine.grammar_links import MaskBuffers, _host_register

    for _ in range(3):
        masks = MaskBuffers(4096, pin=True, shared_rows=64)
        assert masks.buffers.is_pinned()
        del masks
        torch.ones(8, device="cuda").sum().item()
    masks = MaskBuffers(4096, pin=True, shared_rows=64)
    assert not _host_register(masks.buffers)
    torch.ones(8, device="cuda").sum().item()
    masks.close()
