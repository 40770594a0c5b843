import cProfile, pstats, time
from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
llm = LLM(None, device="cpu", max_num_seqs=16, kv_cache_memory_gb=0.5)
eng = llm.engine
def wave(seed):
    for i in range(16):
        eng.add_request(f"w{seed}-{i}", [(7 * i + 13 * seed + j) % 4000 + 100 for j in range(128)], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    steps = 0
    while eng.has_unfinished():
        eng.step(); steps += 1
    return steps
wave(0)
t = time.perf_counter(); steps = wave(1); print(f"16 x 128 prefill: {1e3*(time.perf_counter()-t):.1f} ms in {steps} steps")
p = cProfile.Profile(); p.enable(); wave(2); p.disable()
st = pstats.Stats(p).stats
top = sorted(st.items(), key=lambda it: -it[1][2])[:18]
for (f, l, n), (c, _, tt, ct, _) in top:
    print(f"{1e3*tt:8.1f} ms {c:6d}  {n if f == '~' else f.rsplit('/',1)[-1] + ':' + str(l) + '(' + n + ')'}")
