#!/usr/bin/env bash
# One short call on whichever card comes (budget ~250 s): c256 on 77110f4 (session 16's tree, which met the
# targets on its H200) against this tree, our client, 2 API processes, each after a warm-up load; the
# offline figure; the grammar workers' GPU test (jsonschema now in .whl).
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; date +%T
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/o16 && tar -xf .ab/old16.tar -C /tmp/o16
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
export TRITON_CACHE_DIR=/tmp/triton-cache
for dir in /tmp/o16 $PWD; do
  pushd $dir >/dev/null
  python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/c.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/c.log; exit 1; }; popd >/dev/null
  timeout 30 $b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 >/dev/null 2>&1
  echo "-- c256 $dir"; timeout 40 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed 6 2>&1 | grep -E "output token|TTFT|ITL|failed"
  kill -TERM $pid; wait $pid
done
echo "== offline, 1024 x (512 -> 256)"; date +%T
timeout 70 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 \
  --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "tokens/s|roofline"
echo "== grammar workers' GPU test"; date +%T
timeout 60 python3 -m pytest -q -o addopts="" -m gpu --tb=short -p no:cacheprovider \
  tests/gpu/test_gpu_engine.py::test_constrained_decoding_with_grammar_workers_on_graphs 2>&1 | grep -E "^E |passed|failed" | head -20
date +%T
