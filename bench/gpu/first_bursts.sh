#!/usr/bin/env bash
# The one-time costs a fresh server's first large steps pay: bursts of 32 x (512 -> 2) at concurrency 32
# against one server, each burst's TTFT (mean, p50, p90, p99 ms); burst 1 against the later ones.
# bash bench/gpu/first_bursts.sh [bursts] (MODEL=llama-3.1-8b for the 8B shape)
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
model=${MODEL:-llama-3.2-1b}; dir=/tmp/dummy-$model
python3 bench/gpu/make_dummy_folder.py $model $dir >/dev/null || exit 1
python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 > /tmp/bursts.log 2>&1 &
pid=$!
for _ in $(seq 1 240); do curl -sf localhost:8000/ready >/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.25; done
grep -E "warmed up" /tmp/bursts.log | cut -c1-160
for k in $(seq 1 ${1:-4}); do
  echo -n "burst $k (at $(date +%s.%N | cut -c1-14)): "
  python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy --num-prompts 32 \
    --max-concurrency 32 --input-len 512 --output-len 2 --seed $k 2>&1 | grep -E "^TTFT|failed [1-9]"
done
kill -TERM $pid; wait $pid
