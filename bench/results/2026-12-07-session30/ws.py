import json, re, time
from pyinfer.engine.llm import LLM
from pyinfer import SamplingParams
from pyinfer.sampling_params import StructuredOutput
from tests.server.structured_schemas import SCHEMAS
llm = LLM(dtype="float32", device="cpu", kv_cache_memory_gb=0.25)
msgs = [[{"role": "user", "content": "Describe a made-up record as JSON."}]]
for name in ("nested", ):
    for ws in (None, 1):
        c = StructuredOutput(kind="json", spec=json.dumps(SCHEMAS[name]), max_whitespace=ws)
        t=time.time()
        out = llm.chat(msgs, SamplingParams(temperature=0, max_tokens=400, structured=c))[0].outputs[0]
        runs = [len(r) for r in re.findall(r"\s+", out.text)]
        print(name, ws, out.finish_reason, len(out.token_ids), max(runs or [0]), sum(runs), round(time.time()-t,1), repr(out.text[:300]))
