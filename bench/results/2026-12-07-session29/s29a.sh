#!/usr/bin/env bash
# Ready time on an empty Triton cache: this tree (variants compiled ahead, in parallel) against a5c390e,
# alternating, with the start-up log's phases; this tree's first c32 load against its second; GPU tests.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; nproc
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
mkdir -p /tmp/old && tar -xf .ab/old29.tar -C /tmp/old
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
start() {  # DIR LABEL [load]
  export TRITON_CACHE_DIR=/tmp/tc-$2; rm -rf $TRITON_CACHE_DIR
  pushd $1 >/dev/null; t0=$(date +%s.%N)
  python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 --api-server-count 2 > $OUT/$2.log 2>&1 &
  pid=$!; wait_ready $pid || { tail -30 $OUT/$2.log; popd; return 1; }
  echo "== $2 ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"; popd >/dev/null
  grep -v "pyinfer.access" $OUT/$2.log | grep -E "loaded|KV cache|compiled|captured|chose|warmed|ready" | cut -c12-230
  if [[ -n "$3" ]]; then for k in 1 2; do echo "-- c32 run $k, 128 x (512 -> 256)"
    timeout 60 $b --num-prompts 128 --max-concurrency 32 --input-len 512 --output-len 256 --seed $k 2>&1 | grep -E "output token|TTFT|failed"; done; fi
  kill -TERM $pid; wait $pid
  echo "variants in the cache: $(python3 bench/gpu/triton_cache.py $TRITON_CACHE_DIR | wc -l)"
}
start /tmp/old old1; start $PWD new1; start /tmp/old old2; start $PWD new2 load
echo "== GPU tests"
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels tests/gpu 2>&1 | tail -15
