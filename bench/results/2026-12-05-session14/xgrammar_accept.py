import time, json, torch, random, xgrammar as xgr
from concurrent.futures import ThreadPoolExecutor
from pyinfer.tokenizer import load_tokenizer
from pyinfer.engine.structured_output import MAX_JSON_WHITESPACE
hf = load_tokenizer(".gpu-tokenizer", "auto", None).hf
V = 49152
info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=V, stop_token_ids=[hf.eos_token_id])
comp = xgr.GrammarCompiler(info)
schema = json.dumps({"type":"object","properties":{"text":{"type":"string","minLength":2000,"maxLength":4000}},"required":["text"]})
g = comp.compile_json_schema(schema, any_whitespace=True, max_whitespace_cnt=MAX_JSON_WHITESPACE, strict_mode=True)
B = 64
ms = [xgr.GrammarMatcher(g) for _ in range(B)]
for m in ms: assert m.accept_string('{"text": "')
mask = torch.full((B, -(-V//32)), -1, dtype=torch.int32)
rng = random.Random(0)
def allowed(row):
    bits = mask[row]
    ids = [i for i in rng.sample(range(V), 4000) if (bits[i//32] >> (i%32)) & 1]
    return ids[0]
pool = ThreadPoolExecutor(4)
for step in range(6):
    for i,m in enumerate(ms): m.fill_next_token_bitmask(mask, i)
    toks = [allowed(i) for i in range(B)]
    t0 = time.perf_counter()
    if step % 3 == 0:
        for m,t in zip(ms,toks): assert m.accept_token(t)
        how = "python loop"
    elif step % 3 == 1:
        xgr.BatchGrammarMatcher.batch_accept_token(ms, toks)
        how = "batch_accept_token"
    else:
        list(pool.map(lambda mt: mt[0].accept_token(mt[1]), zip(ms, toks)))
        how = "4 python threads"
    t1 = time.perf_counter()
    print(f"{how}: {1e6*(t1-t0)/B:.1f} us/row; mean token bytes {sum(len(hf.decode([t])) for t in toks)/B:.1f}")
