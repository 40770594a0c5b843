# session 20 call A: main (a782a3f) on the GPU: tests, memory, cold starts, the H200 targets under our client
source bench/gpu/setup.sh || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
echo "== gpu tests $(date +%T)"; timeout 170 python3 -m pytest -q -m gpu tests/gpu tests/kernels -p no:cacheprovider 2>&1 | tail -4
echo "== first_runs_engine $(date +%T)"; TRITON_CACHE_DIR=/tmp/triton-f timeout 70 python3 bench/gpu/first_runs_engine.py $d 3 2>&1 | grep -E "^run|slowest|chose the"
echo "== front_end 1B, cold start then 2 API processes at c256 $(date +%T)"; mkdir -p /tmp/o-a; OUT=/tmp/o-a API_COUNTS=2 PROFILE=0 TRITON_CACHE_DIR=/tmp/triton-a timeout 150 bash bench/gpu/front_end.sh 2>&1 | grep -E "ready after|variants|run [0-9]|API proc|output token|TTFT|ITL|compiled|exit|against"; cp /tmp/o-a/start-up.log $OUT/start-up-1b.log
echo "== front_end 8B, cold start $(date +%T)"; mkdir -p /tmp/o-8; OUT=/tmp/o-8 API_COUNTS= PROFILE=0 MODEL=llama-3.1-8b TRITON_CACHE_DIR=/tmp/triton-8b timeout 130 bash bench/gpu/front_end.sh 2>&1 | grep -E "ready after|variants|run [0-9]|output token|TTFT|compiled|exit|against"; cp /tmp/o-8/start-up.log $OUT/start-up-8b.log
export TRITON_CACHE_DIR=/tmp/triton-a
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/s.log 2>&1 &
pid=$!; wait_ready $pid || { tail -20 /tmp/s.log; exit 1; }
echo "== rate 80, 800 x (512 -> 256) $(date +%T)"
timeout 60 $b --num-prompts 800 --request-rate 80 --input-len 512 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT|failed"
$b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
echo "== batch 1, 2048 -> 256"
timeout 40 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
kill -TERM $pid; wait $pid; echo "end $(date +%T)"
