"""Our logits and greedy tokens against Hugging Face transformers on the same weights."""

from __future__ import annotations

import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

# fp32 on both sides; differences come only from summation order.
TINY_LOGITS_ATOL = 1e-4
SMOLLM2_LOGITS_ATOL = 2e-3  # 30 layers, 49k vocab, logits of magnitude ~20


def our_prompt_logits(llm: LLM, prompt: list[int]) -> torch.Tensor:
    """Logits of every prompt position, by one prefill through the engine's model and attention metadata."""

    runner = llm.engine.runner
    dev = runner.device
    n = len(prompt)
    blocks = list(range(-(-n // runner.block_size)))
    meta = runner.backend.build_metadata(
        slot_mapping=torch.arange(n, device=dev),
        seq_lens=torch.tensor([n], device=dev),  # int64, as AttentionMetadata has them
        block_tables=torch.tensor([blocks], device=dev),
        num_decodes=0,
        query_lens=[n],
        seq_lens_host=[n],
        block_size=runner.block_size,
        query_start_loc=torch.tensor([0, n], dtype=torch.int32, device=dev),
        max_query_len=n,
    )
    with torch.inference_mode():
        x, residual = runner.model(torch.tensor(prompt, device=dev), torch.arange(n, device=dev), meta)
        return runner.model.compute_logits(x, residual).float()


def hf_logits(model, prompt: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([prompt])).logits[0].float()


def test_tiny_llama_logits_match_transformers(tiny_llama):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    llm = LLM(str(tiny_llama), dtype="float32", device="cpu", num_kv_blocks=64)
    prompt = torch.randint(3, 320, (150,), generator=torch.Generator().manual_seed(0)).tolist()
    ours, ref = our_prompt_logits(llm, prompt), hf_logits(hf, prompt)
    assert ref.abs().max() > 1.0, "reference logits are degenerate"
    torch.testing.assert_close(ours, ref, atol=TINY_LOGITS_ATOL, rtol=0)


def test_tiny_llama_config_is_read(tiny_llama):
    llm = LLM(str(tiny_llama), dtype="float32", device="cpu", num_kv_blocks=8)
    cfg = llm.engine.model_config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    untied = "untied" in tiny_llama.name
    assert cfg.tie_word_embeddings is not untied
    assert (cfg.rope_scaling or {}).get("rope_type") == ("llama3" if untied else None)
    model = llm.engine.runner.model
    assert (model.lm_head.weight is model.embed_tokens.weight) is not untied


def test_smollm2_gguf_logits_match_transformers(smollm2_llm, smollm2_hf):
    prompt = smollm2_llm.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 3)
    ours, ref = our_prompt_logits(smollm2_llm, prompt), hf_logits(smollm2_hf, prompt)
    torch.testing.assert_close(ours, ref, atol=SMOLLM2_LOGITS_ATOL, rtol=0)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village at the edge of a dark forest, there lived an old woodcutter who",
    "1, 2, 3, 4,",
    "<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n",
]


def test_greedy_tokens_match_transformers_in_one_batch(smollm2_llm, smollm2_hf):
    """Prompts of different lengths, run together in one continuous batch, each equal to HF's greedy."""
    tok = smollm2_llm.tokenizer
    prompts = [tok.encode(p) for p in PROMPTS]
    params = SamplingParams(temperature=0, max_tokens=32, min_tokens=32)  # as HF: EOS suppressed
    outs = smollm2_llm.generate(prompts, params)
    for prompt, out in zip(prompts, outs, strict=True):
        with torch.inference_mode():
            ref = smollm2_hf.generate(
                torch.tensor([prompt]), max_new_tokens=32, do_sample=False, min_new_tokens=32, pad_token_id=0
            )[0, len(prompt) :].tolist()
        assert out.outputs[0].token_ids == ref, tok.decode(prompt)
