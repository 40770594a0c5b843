#!/usr/bin/env bash
# One call on whichever card comes, most telling first. COLD=1 (default): this tree as the machine's first
# server on an empty Triton cache (ready time, its first c32 load against its second). Then c256 on
# 77110f4 (session 16's tree, which met the targets on its H200) against this tree, PAIRS times (default
# 2), alternating, our client, 2 API processes, each after a warm-up load; the offline figure; the grammar
# workers' GPU test (jsonschema in .whl). COLD=0 PAIRS=1 fits about 250 s.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; git log -1 --format=%h 2>/dev/null; date +%T
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/o16 && tar -xf .ab/old16.tar -C /tmp/o16
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
export TRITON_CACHE_DIR=/tmp/triton-cache; rm -rf $TRITON_CACHE_DIR
serve() { python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > $1 2>&1 & }
if [ "${COLD:-1}" = 1 ]; then
  t0=$(date +%s.%N); serve /tmp/s.log; pid=$!; wait_ready $pid || { tail -30 /tmp/s.log; exit 1; }
  echo "== ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s (empty Triton cache)"
  grep -v "pyinfer.access" /tmp/s.log | grep -E "loaded|KV cache|compiled|captured|warmed|core ready" | cut -c12-200
  for k in 1 2; do echo "-- c32 run $k, 128 x (512 -> 256)"
    timeout 40 $b --num-prompts 128 --max-concurrency 32 --input-len 512 --output-len 256 --seed $k 2>&1 | grep -E "output token|TTFT|failed"; done
  kill -TERM $pid; wait $pid
fi
echo "== c256, 1024 x (512 -> 256): 77110f4 against this tree, alternating"; date +%T
for _ in $(seq ${PAIRS:-2}); do for dir in /tmp/o16 $PWD; do
  pushd $dir >/dev/null; serve /tmp/c.log; pid=$!; wait_ready $pid || { tail -20 /tmp/c.log; exit 1; }; popd >/dev/null
  timeout 40 $b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 >/dev/null 2>&1
  echo "-- $dir"; timeout 50 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --seed 6 2>&1 | grep -E "output token|TTFT|ITL|failed"
  kill -TERM $pid; wait $pid
done; done
echo "== offline, 1024 x (512 -> 256)"; date +%T
timeout 90 python3 -m pyinfer.cli bench throughput --model $d --load-format dummy --num-prompts 1024 --input-len 512 \
  --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192 2>&1 | grep -E "tokens/s|roofline"
echo "== grammar workers' GPU test"; date +%T
timeout 80 python3 -m pytest -q -o addopts="" -m gpu --tb=short -p no:cacheprovider \
  tests/gpu/test_gpu_engine.py::test_constrained_decoding_with_grammar_workers_on_graphs 2>&1 | grep -E "^E |passed|failed" | head -20
date +%T
