"""Greedy tokens (and their logprobs) of mixed prompts at one tensor-parallel size, as JSON on stdout, for
issue 28's check that TP=N gives TP=1's tokens. Dummy weights are drawn per checkpoint name, so every TP size
loads the same model; float32 by default, where a bf16 near-tie of random weights cannot flip a token.

python3 bench/gpu/tp_greedy.py MODEL TP [DTYPE]    (MODEL: a preset such as llama-3.1-8b)"""

import json
import random
import sys

from pyinfer import LLM, SamplingParams

model, tp = sys.argv[1], int(sys.argv[2])
dtype = sys.argv[3] if len(sys.argv) > 3 else "float32"
rng = random.Random(0)
prompts = [[rng.randrange(1, 32000) for _ in range(n)] for n in (1, 7, 13, 64, 300, 500, 1000, 2048)]
llm = LLM(model, load_format="dummy", dtype=dtype, tensor_parallel_size=tp, max_num_seqs=16)
params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True, logprobs=1)
outputs = [out.outputs[0] for out in llm.generate(prompts, params)]
print(json.dumps([{"tokens": o.token_ids, "logprobs": [lp.logprob for lp in o.logprobs]} for o in outputs]))
llm.close()
