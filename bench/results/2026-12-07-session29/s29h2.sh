#!/usr/bin/env bash
# H200 call 2 of 3 (stages vLLM's part ab): the 8B shape's cold start (ready on an empty Triton cache, its first
# c32 load against its second), then c256 twice more on the 1B with 2 API processes (our client).
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; date +%T
MODEL=llama-3.1-8b RUNS=2 API_COUNTS="" PROFILE=0 TRITON_CACHE_DIR=/tmp/tc-8b timeout 300 bash bench/gpu/front_end.sh 2>&1 \
  | grep -E "ready after|compiled|captured|KV cache|variants|run [0-9]|output token|TTFT|against|exit"
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b; export TRITON_CACHE_DIR=/tmp/triton-cache
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/s3.log 2>&1 &
pid=$!; wait_ready $pid || { tail -30 /tmp/s3.log; exit 1; }
for k in 2 3; do echo "== c256 run $k, 1024 x (512 -> 256), 2 API processes"
  timeout 90 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed $((k+5)) 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed"; done
kill -TERM $pid; wait $pid
echo "== the grammar workers' GPU test"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_gpu_engine.py::test_constrained_decoding_with_grammar_workers_on_graphs 2>&1 | grep -vE "^\s*$" | tail -40
