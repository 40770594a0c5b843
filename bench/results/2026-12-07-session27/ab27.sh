#!/usr/bin/env bash
# A/B on one GPU: the server before SO_REUSEPORT listeners (8c4a0cd~1, .ab/old27.tar) against this tree,
# c256 1024 x (512 -> 256), our client, default server (2 API processes on a GPU). Prints how many requests
# each API process answered. The old tree runs from its own directory (python -m puts cwd first).
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; git rev-parse --short HEAD 2>/dev/null
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/old && tar -xf .ab/old27.tar -C /tmp/old
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for round in 1 2; do for v in old new; do
  pp=""; [[ $v == old ]] && pp=/tmp/old
  (cd ${pp:-.} && exec python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000) > /tmp/s-$v.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/s-$v.log; exit 1; }
  (cd ${pp:-.} && grep -q reuse_port pyinfer/server/launch.py) && echo "$v: own socket per API process" || echo "$v: one shared socket"
  $b --num-prompts 256 --max-concurrency 256 --input-len 512 --output-len 64 --seed 9 >/dev/null 2>&1
  n0=$(wc -l < /tmp/s-$v.log)
  echo "== round $round $v: c256 1024 x (512 -> 256)"
  timeout 100 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed $round 2>&1 | grep -E "output token|TTFT|ITL|failed"
  sleep 1; echo "answered by: $(tail -n +$((n0 + 1)) /tmp/s-$v.log | grep "pyinfer.access: POST /v1/" | grep -o "\[api-[0-9]\]" | sort | uniq -c | tr '\n' ' ')"
  kill -TERM $pid; wait $pid
done; done
