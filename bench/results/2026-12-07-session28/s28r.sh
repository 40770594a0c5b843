#!/usr/bin/env bash
# On an H200: the ready time on an empty Triton cache, twice (the first on a machine just started, with
# nothing read from its disk yet), with the start-up log's phases.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$name"
[[ "$name" == *H200* ]] || { echo "not an H200: nothing run"; exit 0; }
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
for k in 1 2; do
  export TRITON_CACHE_DIR=/tmp/triton-cache-$k; rm -rf $TRITON_CACHE_DIR
  t0=$(date +%s.%N); echo "== start $k at $(date +%T.%N | cut -c1-12)"
  python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/r$k.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -30 /tmp/r$k.log; exit 1; }
  echo "ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
  grep -v "pyinfer.access" /tmp/r$k.log | grep -E "INFO" | cut -c12-200 | head -24
  kill -TERM $pid; wait $pid
done
