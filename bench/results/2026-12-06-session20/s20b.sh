# session 20 call B: does the eager padding cost throughput? main (tree) against the pre-padding 80854e4 (.main-src), alternately
source bench/gpu/setup.sh || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
export TRITON_CACHE_DIR=/tmp/triton-b
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for tree in base main base main; do
  pp=/tmp/site:$PWD; [ $tree = base ] && pp=/tmp/site:$PWD/.main-src
  echo "== $tree: offline, 1024 x (512 -> 256) $(date +%T)"
  PYTHONPATH=$pp timeout 70 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "output tokens/s"
  PYTHONPATH=$pp python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/s-$tree.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/s-$tree.log; exit 1; }
  $b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 >/dev/null 2>&1
  echo "== $tree: concurrency 256, 1024 x (512 -> 256), after a warm-up load $(date +%T)"
  timeout 50 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 2>&1 | grep -E "output token|TTFT|ITL|failed"
  kill -TERM $pid; wait $pid
done
echo "end $(date +%T)"
