"""Per-op time inside the fused decode layer, real weights, all 30 layers in turn (cold-ish caches)."""
import sys, time, collections, torch
from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.kernels.cpu import cpu_ops
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 16
ctx = 256
llm = LLM(None, device="cpu", max_num_seqs=16, kv_cache_memory_gb=0.5)
eng = llm.engine
for i in range(batch):
    eng.add_request(f"p{i}", [(7*i+j) % 4000 + 100 for j in range(ctx)], SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
while eng.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in eng.scheduler.running):
    eng.step()
# capture one step's metadata through the hook
runner = eng.runner
fused = runner.fused_decode
captured = {}
orig = fused.__call__
def grab(input_ids, positions, meta):
    captured.update(ids=input_ids.clone(), pos=positions.clone(), meta=meta)
    return orig(input_ids, positions, meta)
class G:
    def __getattr__(self, k): return getattr(fused, k)
    def __call__(self, *a): return grab(*a)
runner.fused_decode = G()
eng.step()
ops = cpu_ops()
m = captured["meta"]; pos = captured["pos"]
model = fused.model
T = {k: 0.0 for k in "norm1 qkv rotary store attn o norm2 gate_up silu down".split()}
def run(record):
    x, res = model.embed_tokens(captured["ids"]), None
    for layer, inp in zip(model.layers, fused.inputs):
        kv = layer.self_attn.attn.kv_cache
        (n1, e1, n2, e2, qkv, o, gu, dn, nh, nkv, cs, sc) = inp
        t = [time.perf_counter()]
        def tick(k):
            now = time.perf_counter(); 
            if record: T[k] += now - t[0]
            t[0] = now
        normed = ops.rms_norm(x, res, n1, e1); tick("norm1")
        stream = normed[1] if res is not None else x
        p = ops.int4_blocks_mm(normed[0], *qkv, qkv[0].shape[0] * 16); tick("qkv")
        dim = kv.size(4); qs = nh*dim; ks = nkv*dim; tok = x.size(0)
        q = p[:, :qs].view(tok, nh, dim); k = p[:, qs:qs+ks].view(tok, nkv, dim); v = p[:, qs+ks:].view(tok, nkv, dim)
        ops.rotary_(pos, q, k, cs); tick("rotary")
        ops.store_kv(kv, k, v, m.slot_mapping); tick("store")
        a = ops.decode_attention(q, kv, m.block_tables, m.seq_lens, sc).view(tok, qs); tick("attn")
        out = ops.int4_blocks_mm(a, *o, o[0].shape[0] * 16); tick("o")
        post = ops.rms_norm(out, stream, n2, e2); tick("norm2")
        g = ops.int4_blocks_mm(post[0], *gu, gu[0].shape[0] * 16); tick("gate_up")
        h = ops.silu_and_mul(g); tick("silu")
        x = ops.int4_blocks_mm(h, *dn, dn[0].shape[0] * 16); res = post[1]; tick("down")
for _ in range(3): run(False)
n = 30
t0 = time.perf_counter()
for _ in range(n): run(True)
tot = (time.perf_counter() - t0) / n * 1e3
for k, v in T.items(): print(f"{k:8s} {v/n*1e3:7.3f} ms/step")
print(f"sum {sum(T.values())/n*1e3:.3f}  wall {tot:.3f} ms/step")
t0 = time.perf_counter()
for _ in range(n): fused(captured["ids"], pos, m)
print(f"fused {(time.perf_counter()-t0)/n*1e3:.3f} ms/step")
