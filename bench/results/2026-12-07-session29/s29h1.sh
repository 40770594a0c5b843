#!/usr/bin/env bash
# H200 call 1 of 3 (stages vLLM's part aa): issue 24's compact targets (.ab/s26q.sh: ready on an empty Triton
# cache as the machine's first server, cold start c32 twice, c256 with 2 API processes, batch 1 served, the
# offline figure), then a second start on an empty Triton cache with its phases.
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
[[ "$name" == *H200* ]] || { echo "$name: not an H200, nothing run"; exit 0; }
git log -1 --format=%h 2>/dev/null; date +%T
bash .ab/s26q.sh
grep -v "pyinfer.access" /tmp/s.log | grep -E "loaded|KV cache|compiled|captured|chose|warmed|core ready" | cut -c12-200
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b
export TRITON_CACHE_DIR=/tmp/tc-second; rm -rf $TRITON_CACHE_DIR
t0=$(date +%s.%N)
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > /tmp/s2.log 2>&1 &
pid=$!; wait_ready $pid || { tail -30 /tmp/s2.log; exit 1; }
echo "== second start: ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s (empty Triton cache)"
grep -v "pyinfer.access" /tmp/s2.log | grep -E "loaded|KV cache|compiled|captured|chose|warmed|core ready" | cut -c12-200
kill -TERM $pid; wait $pid
