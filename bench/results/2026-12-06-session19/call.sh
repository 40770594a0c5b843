# session 19: branch eager-token-buckets (tree) against main (.main-src), one call
source bench/gpu/setup.sh || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
echo "== gpu tests (branch) $(date +%T)"; timeout 150 python3 -m pytest -q -m gpu tests/gpu tests/kernels -p no:cacheprovider 2>&1 | tail -4
echo "== first_runs_engine, main $(date +%T)"; PYTHONPATH=/tmp/site:$PWD/.main-src timeout 70 python3 bench/gpu/first_runs_engine.py $d 3 2>&1 | grep -E "^run|slowest"
echo "== first_runs_engine, branch $(date +%T)"; timeout 70 python3 bench/gpu/first_runs_engine.py $d 3 2>&1 | grep -E "^run|slowest"
echo "== front_end 1B, branch $(date +%T)"; mkdir -p /tmp/o-a; OUT=/tmp/o-a API_COUNTS= PROFILE=0 TRITON_CACHE_DIR=/tmp/triton-a timeout 100 bash bench/gpu/front_end.sh 2>&1 | grep -E "ready after|variants|run [0-9]|output token|TTFT|compiled|exit|against"; cp /tmp/o-a/start-up.log $OUT/start-up-1b.log
echo "== front_end 8B, branch $(date +%T)"; mkdir -p /tmp/o-8; OUT=/tmp/o-8 API_COUNTS= PROFILE=0 MODEL=llama-3.1-8b TRITON_CACHE_DIR=/tmp/triton-8b timeout 130 bash bench/gpu/front_end.sh 2>&1 | grep -E "ready after|variants|run [0-9]|output token|TTFT|compiled|exit|against"; cp /tmp/o-8/start-up.log $OUT/start-up-8b.log
export TRITON_CACHE_DIR=/tmp/triton-a
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for tree in main branch; do
  pp=/tmp/site:$PWD; [ $tree = main ] && pp=/tmp/site:$PWD/.main-src
  echo "== $tree: offline, 1024 x (512 -> 256) $(date +%T)"
  PYTHONPATH=$pp timeout 80 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "tokens/s"
  PYTHONPATH=$pp python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/s-$tree.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/s-$tree.log; exit 1; }
  echo "== $tree: concurrency 256, 1024 x (512 -> 256) $(date +%T)"
  timeout 60 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --server-pid $pid 2>&1 | grep -E "output token|TTFT|ITL|failed"
  echo "== $tree: batch 1, 2048 -> 256"
  timeout 30 $b --num-prompts 6 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "TTFT|TPOT"
  kill -TERM $pid; wait $pid
done
echo "end $(date +%T)"
