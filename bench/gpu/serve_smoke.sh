#!/usr/bin/env bash
# The HTTP server on the lent GPU: dummy Llama-3.2-1B weights, the official openai client, then the
# load generator at batch 1 and under load. bash bench/gpu/serve_smoke.sh (JSON under $OUT);
# SERVE_ARGS="--max-num-seqs 256" adds server flags, LOAD="128 256" sets the load's concurrencies.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
dir=/tmp/dummy-1b
python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $dir || exit 1
python3 -m pyinfer.cli serve --model $dir --load-format dummy --port 8000 ${SERVE_ARGS:-} > /tmp/server.log 2>&1 &
server=$!
for _ in $(seq 120); do curl -sf localhost:8000/ready >/dev/null && break; sleep 1; done
grep -iE "captured|KV cache|ready|listening" /tmp/server.log | cut -c1-200
python3 - <<'PY'
import time
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
model = client.models.list().data[0].id
start = time.perf_counter()
stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "w5 w6 w7"}],
    max_tokens=32, stream=True, stream_options={"include_usage": True})
chunks = list(stream)
print(f"openai stream: {len(chunks)} chunks in {1e3 * (time.perf_counter() - start):.0f} ms, usage {chunks[-1].usage}")
r = client.completions.create(model=model, prompt="w9 w10", max_tokens=16, temperature=0.7, n=2, logprobs=2)
print("completion choices", len(r.choices), "finish", [c.finish_reason for c in r.choices], "tokens", r.usage.completion_tokens)
try:
    client.chat.completions.create(model=model, messages=[], max_tokens=4)
except Exception as e:
    print("empty messages ->", type(e).__name__, getattr(e, "status_code", None))
PY
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000"
$b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 128 --output-json $OUT/serve-batch1.json 2>&1 | grep -vi "it/s\]\|%|" | tail -12
for c in ${LOAD:-128}; do
  $b --num-prompts $((4 * c)) --max-concurrency $c --input-len 512 --output-len 256 --output-json $OUT/serve-load-$c.json 2>&1 | grep -vi "it/s\]\|%|" | tail -12
done
curl -s localhost:8000/v1/metrics | head -c 600; echo
kill -TERM $server; wait $server; echo "server exit code $?"
tail -3 /tmp/server.log | cut -c1-200
