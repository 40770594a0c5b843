#!/usr/bin/env bash
# A/B on one GPU: the server at 3502102 (.ab/old.tar: git archive 3502102 pyinfer) against this tree,
# c256 1024 x (512 -> 256), our client. The old tree runs from its own directory: `python -m` puts the
# working directory first on sys.path, ahead of PYTHONPATH (the run in h100-c256-runs.txt missed this, so
# both of its "old" rows ran this tree too).
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/old && tar -xf .ab/old.tar -C /tmp/old
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for round in 1 2; do for v in old new; do
  pp=""; [[ $v == old ]] && pp=/tmp/old
  (cd ${pp:-.} && exec python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000) > /tmp/s-$v.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/s-$v.log; exit 1; }
  (cd ${pp:-.} && python3 -c "import pyinfer.server.http_protocol") 2>/dev/null && echo "$v has the bounded protocol" || echo "$v lacks it"
  $b --num-prompts 256 --max-concurrency 256 --input-len 512 --output-len 64 --seed 9 >/dev/null 2>&1
  echo "== round $round $v: c256 1024 x (512 -> 256)"
  timeout 100 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed $round 2>&1 | grep -E "output token|TTFT|ITL|failed"
  kill -TERM $pid; wait $pid
done; done
