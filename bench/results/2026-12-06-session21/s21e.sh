# session 21 call 5: HEAD against 80854e4 (.main-src) on this host, alternately: rate 80 under vLLM's client, three times each
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b; export TRITON_CACHE_DIR=/tmp/triton-cache
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
nproc; uptime; lscpu | grep -E "Model name|^CPU\(s\)"
for tree in base head base head base head; do
  pp=$PYTHONPATH; [ $tree = base ] && pp=$PWD/.main-src:$PYTHONPATH
  (cd /tmp && PYTHONPATH=$pp python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > /tmp/ab-$tree.log 2>&1) &
  pid=$!; for _ in $(seq 240); do curl -sf localhost:8000/ready >/dev/null && break; sleep 0.25; done
  $b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 >/dev/null 2>&1
  echo "== $tree: vllm client rate 80"
  timeout 60 env PYTHONPATH=/tmp/vsite:/tmp/vdeps:/tmp/vextra:$PYTHONPATH python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url http://127.0.0.1:8000 --model dummy --tokenizer $d --dataset-name random --random-input-len 512 --random-output-len 256 --ignore-eos --seed 0 --num-prompts 800 --request-rate 80 2>&1 | grep -E "Output token|TTFT|TPOT"
  pkill -TERM -f "pyinfer.cli serve"; wait $pid
done
date +%T
