#!/usr/bin/env bash
# Compact H200 run (~150 s): ready time on an empty Triton cache, the cold-start c32 run against its second,
# c256 with 2 API processes, batch 1 served.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$name"; git rev-parse --short HEAD 2>/dev/null
[[ "$name" == *H200* || "${ANY_GPU:-0}" == 1 ]] || { echo "not an H200: nothing run"; exit 0; }
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
export TRITON_CACHE_DIR=/tmp/triton-cache; rm -rf $TRITON_CACHE_DIR
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
t0=$(date +%s.%N)
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/s.log 2>&1 &
pid=$!; wait_ready $pid || { tail -30 /tmp/s.log; exit 1; }
echo "ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s (empty Triton cache, 2 API processes)"
for k in 1 2; do echo "== c32 run $k, 128 x (512 -> 256)"
  timeout 60 $b --num-prompts 128 --max-concurrency 32 --input-len 512 --output-len 256 --seed $k 2>&1 | grep -E "output token|TTFT|failed"; done
for k in 1; do echo "== c256 run $k, 1024 x (512 -> 256), 2 API processes"
  timeout 90 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed $((k+5)) 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed"; done
$b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
echo "== batch 1 served, 2048 -> 256"
timeout 60 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
kill -TERM $pid; wait $pid; echo "server exit $?"
echo "== offline, 1024 x (512 -> 256)"
timeout 200 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 \
  --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "tokens/s|roofline"
