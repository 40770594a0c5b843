#!/usr/bin/env bash
# the first constrained request's latency on a fresh CPU server (its grammar thread loads the tokenizer
# first), converted at every start against read from the kept copy
export TORCH_EXTENSIONS_DIR=$HOME/.cache/torch_extensions
first() {  # label, XDG_CACHE_HOME
  XDG_CACHE_HOME=$2 /work/main/.venv/bin/python -m pyinfer serve --port 8011 > /tmp/fc-$1.log 2>&1 &
  pid=$!
  for _ in $(seq 900); do curl -sf localhost:8011/ready >/dev/null && break; sleep 0.1; done
  for k in 1 2; do
    t0=$(date +%s.%N)
    curl -s localhost:8011/v1/chat/completions -H 'content-type: application/json' -d '{"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "A user as JSON"}], "max_tokens": 16, "response_format": {"type": "json_object"}}' > /dev/null
    echo "$1: constrained request $k took $(python3 -c "import time; print(f'{time.time() - $t0:.2f}')") s"
  done
  kill -TERM $pid; wait $pid
}
for k in 1 2; do first converted /tmp/not-a-dir; first kept $HOME/.cache; done
