#!/bin/bash
# served.sh TREE EXTDIR [env...]: engine batch-1 rate, then served TPOT at batch 1
tree=$1; ext=$2; shift 2
cd $tree
export TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=$tree "$@"
.venv/bin/python -m pyinfer.cli bench latency --input-len 128 --output-len 256 --iters 3 2>&1 | tail -1 | sed 's/^/engine: /'
.venv/bin/python -m pyinfer.cli serve --port 8010 > /tmp/ab/b1-server.log 2>&1 &
srv=$!
for _ in $(seq 240); do curl -sf http://127.0.0.1:8010/ready >/dev/null && break; sleep 0.5; done
.venv/bin/python -m pyinfer.cli bench serve --base-url http://127.0.0.1:8010 --num-prompts 2 --max-concurrency 1 --input-len 128 --output-len 16 >/dev/null 2>&1
.venv/bin/python -m pyinfer.cli bench serve --base-url http://127.0.0.1:8010 --num-prompts 8 --max-concurrency 1 --input-len 128 --output-len 256 2>/dev/null | grep -E "^TPOT|output token" | sed 's/^/served: /'
kill $srv; wait $srv 2>/dev/null
