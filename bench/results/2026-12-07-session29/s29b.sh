#!/usr/bin/env bash
# The GPU tests; the one that failed at a14803b on this tree and on a5c390e; each Triton compile of an
# engine start, timed; batch 1 served on 77110f4 against this tree.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/old && tar -xf .ab/old29.tar -C /tmp/old
echo "== GPU tests"; timeout 200 python3 -m pytest -q -o addopts="" -m gpu --tb=short -p no:cacheprovider tests/kernels tests/gpu > /tmp/all.txt 2>&1
grep -E "^E |FAILED|passed|failed" /tmp/all.txt | head -30
t=tests/gpu/test_gpu_engine.py::test_constrained_decoding_with_grammar_workers_on_graphs
echo "== new"; timeout 150 python3 -m pytest -q -o addopts="" -m gpu --tb=short -p no:cacheprovider $t > /tmp/g.txt 2>&1; rc=$?
grep -E "^E |Error|assert" /tmp/g.txt | head -30; tail -5 /tmp/g.txt
[ $rc = 0 ] || { echo "== old"; (cd /tmp/old && timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider $t 2>&1 | tail -3); }
echo "== compile times, empty cache"
TRITON_CACHE_DIR=/tmp/tc-x timeout 120 python3 .ab/compile_times.py $d 2>&1 | grep -E "compile|engine up|KV cache|captured|warmed|generated|Error|error" | cut -c1-200
echo "== batch 1 served, 2048 -> 256: 77110f4 against this tree, alternating"
mkdir -p /tmp/o16 && tar -xf .ab/old16.tar -C /tmp/o16
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
export TRITON_CACHE_DIR=/tmp/tc-b1
for dir in /tmp/o16 $PWD /tmp/o16 $PWD; do
  pushd $dir >/dev/null
  python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/b1.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/b1.log; exit 1; }
  popd >/dev/null  # the client: this tree's, for both
  $b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
  echo "-- $dir"; timeout 60 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
  kill -TERM $pid; wait $pid
done
