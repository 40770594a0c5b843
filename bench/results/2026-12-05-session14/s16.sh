#!/bin/bash
tree=$1; ext=$2; shift 2
cd $tree
export TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=$tree "$@"
.venv/bin/python -m pyinfer.cli serve --port 8010 > /tmp/ab/s16-server.log 2>&1 &
srv=$!
for _ in $(seq 240); do curl -sf http://127.0.0.1:8010/ready >/dev/null && break; sleep 0.5; done
.venv/bin/python -m pyinfer.cli bench serve --base-url http://127.0.0.1:8010 --num-prompts 4 --max-concurrency 4 --input-len 128 --output-len 16 >/dev/null 2>&1
.venv/bin/python -m pyinfer.cli bench serve --base-url http://127.0.0.1:8010 --num-prompts 32 --max-concurrency 16 --input-len 156 --output-len 128 2>/dev/null | grep -E "output token|^TTFT" | sed 's/^/16 streams: /'
kill $srv; wait $srv 2>/dev/null
