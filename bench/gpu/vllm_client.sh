#!/usr/bin/env bash
# Issue 24's targets under vLLM's own load client (`vllm bench serve`) and ours, against `pyinfer serve` on the
# dummy 1B with API_COUNTS API processes (default "1 2"): concurrency 256, 1,024 x (512 -> 256), and request
# rate 80/s, 800 x (512 -> 256). Needs vLLM's three parts in /tmp/vb (earlier warm calls of this lease, as
# ../shared/gpu/side_by_side.sh stages them) and carries .peer/vllm-extra. Results under $OUT.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
dir=/tmp/dummy-llama-3.2-1b
[ -d $dir ] || python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $dir >/dev/null || exit 1
if [ ! -d /tmp/vsite ]; then
  [ "$(ls /tmp/vb | wc -l)" -ge 3 ] || { echo "vLLM parts missing: $(ls /tmp/vb)"; exit 1; }
  (cd /tmp && cat vb/part.a* | xz -d -T16 | tar xf -) || { echo "vLLM unpack failed"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --target /tmp/vextra .peer/vllm-extra/*.whl
fi
vllm_client() {  # label, then the load's flags
  local label=$1; shift
  timeout 200 env PYTHONPATH=/tmp/vsite:/tmp/vdeps:/tmp/vextra:$PYTHONPATH python3 -m vllm.entrypoints.cli.main bench serve \
    --backend vllm --base-url http://127.0.0.1:8000 --model dummy --tokenizer $dir --dataset-name random \
    --random-input-len 512 --random-output-len 256 --ignore-eos --seed 0 "$@" > $OUT/$label.txt 2>&1
  grep -E "throughput|TTFT|TPOT|ITL|Successful|Failed|Error|error" $OUT/$label.txt | head -24
}
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
for n in ${API_COUNTS:-1 2}; do
  python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 --api-server-count $n > /tmp/server-v$n.log 2>&1 &
  pid=$!
  wait_ready $pid || { tail -30 /tmp/server-v$n.log; exit 1; }
  echo "== $n API processes: warm-up load (a fresh server's first run; not counted)"
  timeout 100 $b --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 2>&1 | grep -E "output token|TTFT "
  echo "== $n API processes: vllm bench serve, concurrency 256, 1024 x (512 -> 256)"
  vllm_client vllm-c256-n$n --num-prompts 1024 --max-concurrency 256
  echo "== $n API processes: vllm bench serve, request rate 80/s, 800 x (512 -> 256)"
  vllm_client vllm-rate80-n$n --num-prompts 800 --request-rate 80
  echo "== $n API processes: pyinfer bench serve, request rate 80/s, 800 x (512 -> 256)"
  timeout 100 $b --num-prompts 800 --request-rate 80 --input-len 512 --output-len 256 --output-json $OUT/rate80-n$n.json 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed"
  kill -TERM $pid; wait $pid; echo "server exit $?"
done
