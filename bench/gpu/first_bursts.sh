#!/usr/bin/env bash
# The one-time costs a fresh server's first requests pay: bursts of 32 x (512 -> 1) at once against one
# server, each burst's latency split into the engine's time and the front end's (burst_breakdown.py).
# bash bench/gpu/first_bursts.sh [bursts] (MODEL=llama-3.1-8b for the 8B shape; SERVE_ARGS adds server flags)
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
model=${MODEL:-llama-3.2-1b}; dir=/tmp/dummy-$model
python3 bench/gpu/make_dummy_folder.py $model $dir >/dev/null || exit 1
python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 ${SERVE_ARGS:-} > /tmp/bursts.log 2>&1 &
pid=$!
wait_ready $pid || { tail -30 /tmp/bursts.log; kill -TERM $pid; exit 1; }
grep -E "warmed up" /tmp/bursts.log | cut -c1-160
python3 bench/gpu/burst_breakdown.py http://127.0.0.1:8000 ${1:-4}
kill -TERM $pid; wait $pid
