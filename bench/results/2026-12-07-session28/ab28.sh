#!/usr/bin/env bash
# A/B on one GPU: the tree that met issue 24's c256 targets on an H200 (77110f4, session 16; .ab/old16.tar)
# against this tree, c256 1024 x (512 -> 256), our client, default server (2 API processes on a GPU).
# ROUNDS pairs, old first. The old tree runs from its own directory (python -m puts cwd first).
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; git rev-parse --short HEAD 2>/dev/null
d=/tmp/dummy-llama-3.2-1b; [ -d $d ] || python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/old && tar -xf .ab/old16.tar -C /tmp/old
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for round in $(seq 1 ${ROUNDS:-2}); do for v in old new; do
  pp=""; [[ $v == old ]] && pp=/tmp/old
  (cd ${pp:-.} && exec python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000) > /tmp/s-$v.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/s-$v.log; exit 1; }
  $b --num-prompts 256 --max-concurrency 256 --input-len 512 --output-len 64 --seed 9 >/dev/null 2>&1
  echo "== round $round $v: c256 1024 x (512 -> 256)"
  timeout 100 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed $round 2>&1 | grep -E "output token|TTFT|ITL|failed"
  kill -TERM $pid; wait $pid
done; done
