# session 22, H200 only (exits at once on another GPU): cold start 1B, c256 (2 API processes, our client, one and two
# client processes), rate 80 (our client), batch 1 - issue 24's targets at HEAD
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null; date +%T
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$name"; git log --oneline -1 2>/dev/null
[[ "$name" == *H200* ]] || { echo "not an H200: nothing run"; exit 0; }
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
API_COUNTS=2 PROFILE=0 RUNS=2 TRITON_CACHE_DIR=/tmp/triton-h timeout 300 bash bench/gpu/front_end.sh 2>&1 | grep -E "ready after|variants|== |output token|TTFT|ITL|compiled|exit|against|chose|captured|sized|warmed"
export TRITON_CACHE_DIR=/tmp/triton-h; b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/s.log 2>&1 & pid=$!; wait_ready $pid || exit 1
$b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 >/dev/null 2>&1
echo "== rate 80"; timeout 30 $b --num-prompts 800 --request-rate 80 --input-len 512 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT|failed"
$b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
echo "== batch 1"; timeout 20 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
kill -TERM $pid; wait $pid; echo "end $(date +%T)"
date +%T
