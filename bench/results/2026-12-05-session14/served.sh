#!/bin/bash
# served.sh TREE EXTDIR [env...]: one tree's engine batch-1 rate, then `pyinfer serve` under our client:
# batch 1 (TPOT), or with STREAMS=16 set, 16 streams of 156 -> 128 tokens (throughput, TTFT) instead.
tree=$1; ext=$2; shift 2
cd $tree
export TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=$tree "$@"
py=.venv/bin/python
[ -z "$STREAMS" ] && $py -m pyinfer.cli bench latency --input-len 128 --output-len 256 --iters 3 2>&1 | tail -1 | sed 's/^/engine: /'
$py -m pyinfer.cli serve --port 8010 > /tmp/ab/served-server.log 2>&1 &
srv=$!
for _ in $(seq 240); do curl -sf http://127.0.0.1:8010/ready >/dev/null && break; sleep 0.5; done
load() { $py -m pyinfer.cli bench serve --base-url http://127.0.0.1:8010 "$@" 2>/dev/null; }
if [ -z "$STREAMS" ]; then
  load --num-prompts 2 --max-concurrency 1 --input-len 128 --output-len 16 >/dev/null
  load --num-prompts 8 --max-concurrency 1 --input-len 128 --output-len 256 | grep -E "^TPOT|output token" | sed 's/^/served: /'
else
  load --num-prompts 4 --max-concurrency 4 --input-len 128 --output-len 16 >/dev/null
  load --num-prompts 32 --max-concurrency $STREAMS --input-len 156 --output-len 128 | grep -E "output token|^TTFT" | sed "s/^/$STREAMS streams: /"
fi
kill $srv; wait $srv 2>/dev/null
