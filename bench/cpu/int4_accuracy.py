"""How far each CPU path on the embedded model's 4-bit weights is from the exact one (the file's weights
dequantized, fp32): logits' relative error and top-1 agreement, teacher-forced over the int4 tests'
prompts, at a length where our integer kernels run the linears (40) and one where dense GEMMs do (64);
then the capital-of-France answer and its first token's two leaders on each path, and how often 24
seeded samples at the model card's temperature 0.2 / top_p 0.9 name Paris on this CPU's default path.

Paths: our integer kernels with fp32 or bf16 activations (forced, whatever this CPU would choose), and
torch's int4 kernels with bf16 activations.

Usage: PYTHONPATH=. python bench/cpu/int4_accuracy.py
"""

import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.layers import quantization
from tests.engine.test_int4 import TEXTS
from tests.engine.test_parity import our_prompt_logits


def engine(dtype: str, integer: bool) -> LLM:
    chosen = quantization.integer_kernels_wanted
    quantization.integer_kernels_wanted = lambda: integer  # the kernels are chosen as weights are packed
    try:
        return LLM(device="cpu", dtype=dtype, kv_cache_memory_gb=0.1)
    finally:
        quantization.integer_kernels_wanted = chosen


exact = LLM(device="cpu", dtype="float32", kv_cache_memory_gb=0.1)
paths = {
    "integer, fp32 activations": engine("auto", True),  # "auto" is fp32 with the integer kernels,
    "integer, bf16 activations": engine("bfloat16", True),
    "torch int4, bf16 activations": engine("bfloat16", False),
}
print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
for length in (40, 64):
    for name, llm in paths.items():
        errors, agree = [], 0
        for text in TEXTS:
            prompt = exact.tokenizer.encode(text + " " + text)[:length]
            want = our_prompt_logits(exact, prompt).float()
            got = our_prompt_logits(llm, prompt).float()
            errors.append(((got - want).norm() / want.norm()).item())
            agree += (got.argmax(-1) == want.argmax(-1)).sum().item()
        rel = ", ".join(f"{e:.4f}" for e in errors)
        print(f"{length} tokens  {name:30s} rel err {rel}  top-1 {agree / (length * len(TEXTS)):.3f}")

question = [{"role": "user", "content": "What is the capital of France?"}]
for name, llm in {"exact": exact, **paths}.items():
    out = llm.chat(question, SamplingParams(temperature=0, max_tokens=12, logprobs=2))[0].outputs[0]
    (first, a), (second, b) = out.logprobs[0].top[:2]
    lead = f"{llm.tokenizer.decode([first])!r} {a:.3f} vs {llm.tokenizer.decode([second])!r} {b:.3f}"
    print(f"{name:30s} first token {lead}: {out.text!r}")

default = LLM(device="cpu", kv_cache_memory_gb=0.1)
sampled = default.chat(question, SamplingParams(temperature=0.2, top_p=0.9, max_tokens=24, n=24, seed=1))
paris = sum("Paris" in choice.text for choice in sampled[0].outputs)
print(f"default path, temperature 0.2, top_p 0.9: {paris} of 24 samples name Paris")
