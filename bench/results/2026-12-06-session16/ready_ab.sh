#!/usr/bin/env bash
# time from `pyinfer serve` to /ready, the GGUF tokenizer converted at every start (no cache: XDG_CACHE_HOME
# is a file) against read from its kept copy; the CPU kernels' build cache pinned where it is
export TORCH_EXTENSIONS_DIR=$HOME/.cache/torch_extensions
touch /tmp/not-a-dir
ready() {  # label, XDG_CACHE_HOME
  t0=$(date +%s.%N)
  XDG_CACHE_HOME=$2 /work/main/.venv/bin/python -m pyinfer serve --port 8011 > /tmp/rt-$1.log 2>&1 &
  pid=$!
  for _ in $(seq 900); do curl -sf localhost:8011/ready >/dev/null && break; sleep 0.1; done
  echo "$1: ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
  kill -TERM $pid; wait $pid
}
ready warm-up $HOME/.cache
for k in 1 2 3; do ready converted /tmp/not-a-dir; ready kept $HOME/.cache; done
