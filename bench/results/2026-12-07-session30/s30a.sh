#!/usr/bin/env bash
# Session 30, call 1 of 3 (stages vLLM's part aa). On an H200: issue 24's compact targets as the machine's first
# server (.ab/s26q.sh). On any GPU: the GPU suite with each failure's traceback, then batch 1 served on 77110f4
# against this tree, alternating (same host).
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
git log -1 --format=%h 2>/dev/null; date +%T
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$name"
if [[ "$name" == *H200* ]]; then
  bash .ab/s26q.sh
  grep -v "pyinfer.access" /tmp/s.log | grep -E "loaded|KV cache|compiled|captured|chose|warmed|core ready" | cut -c12-200
fi
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b; [ -d $d ] || python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
echo "== GPU tests"; date +%T
timeout 240 python3 -m pytest -q -o addopts="" -m gpu --tb=long -p no:cacheprovider tests/kernels tests/gpu > $OUT/gpu-tests.txt 2>&1
grep -E "FAILED|passed|failed" $OUT/gpu-tests.txt | head -20
grep -nE "^E " $OUT/gpu-tests.txt | head -40
echo "== batch 1 served, 2048 -> 256: 77110f4 against this tree, alternating"; date +%T
mkdir -p /tmp/o16 && tar -xf .ab/old16.tar -C /tmp/o16
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
export TRITON_CACHE_DIR=/tmp/tc-b1
for dir in /tmp/o16 $PWD /tmp/o16 $PWD; do
  pushd $dir >/dev/null
  python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/b1.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -20 /tmp/b1.log; exit 1; }
  popd >/dev/null
  $b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
  echo "-- $dir"; timeout 60 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
  kill -TERM $pid; wait $pid
done
date +%T
