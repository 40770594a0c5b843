#!/usr/bin/env bash
# Issue 24's targets on an H200, first of three calls (vLLM's client follows, bench/gpu/vllm_client.sh):
# the engine's offline figure, cold start and concurrency 256 under our client with the default server,
# and batch 1 served. Exits at once on another GPU (the targets are the H200's) unless ANY_GPU=1.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$name"
[[ "$name" == *H200* || "${ANY_GPU:-0}" == 1 ]] || { echo "not an H200: nothing run"; exit 0; }
d=/tmp/dummy-llama-3.2-1b
python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
echo "== offline, 1024 x (512 -> 256)"
timeout 200 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 \
  --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "tokens/s|roofline"
API_COUNTS="2" PROFILE=0 timeout 300 bash bench/gpu/front_end.sh
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/b1.log 2>&1 &
pid=$!
for _ in $(seq 240); do curl -sf localhost:8000/ready >/dev/null && break; sleep 0.25; done
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
$b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
echo "== batch 1 served, 2048 -> 256"
timeout 100 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
kill -TERM $pid; wait $pid
