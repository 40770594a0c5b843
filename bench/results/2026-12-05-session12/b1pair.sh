#!/bin/bash
cd /work/main
for round in 1 2; do
  .venv/bin/pyinfer bench latency --input-len 128 --output-len 256 --iters 3 2>&1 | grep -A1 "TTFT ms" | tail -1 | sed 's/^/engine: /'
  .venv/bin/pyinfer serve --port 8010 > /tmp/ab/b1-server.log 2>&1 &
  srv=$!
  for _ in $(seq 240); do curl -sf http://127.0.0.1:8010/ready >/dev/null && break; sleep 0.5; done
  .venv/bin/pyinfer bench serve --base-url http://127.0.0.1:8010 --num-prompts 2 --max-concurrency 1 --input-len 128 --output-len 16 >/dev/null 2>&1
  .venv/bin/pyinfer bench serve --base-url http://127.0.0.1:8010 --num-prompts 8 --max-concurrency 1 --input-len 128 --output-len 256 2>/dev/null | grep -E "^TPOT|^TTFT" | sed 's/^/served: /'
  kill $srv; wait $srv 2>/dev/null
done
