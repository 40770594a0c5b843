#!/usr/bin/env bash
# Issue 24 on the lent GPU, one call: start-up on an empty Triton cache (what compiles after /ready),
# the first load run against the next RUNS (default 3) - 1, then a py-spy profile of the server's processes under
# concurrency 256, with API_COUNTS API processes (default "1 2 4"; empty: the cold start only). bash bench/gpu/front_end.sh (results
# under $OUT); MODEL=llama-3.1-8b for the 8B shape, SERVE_ARGS adds server flags, PROFILE=0 skips the profile.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
model=${MODEL:-llama-3.2-1b}; dir=/tmp/dummy-$model
python3 bench/gpu/make_dummy_folder.py $model $dir >/dev/null || exit 1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
echo "triton cache at start: $(python3 bench/gpu/triton_cache.py | wc -l) variants"
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
t0=$(date +%s.%N); echo "launched at $(date +%T.%N)"
python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 ${SERVE_ARGS:-} > /tmp/server.log 2>&1 &
pid=$!
wait_ready $pid || { tail -30 /tmp/server.log; exit 1; }
echo "ready after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
grep -v "pyinfer.access" /tmp/server.log | cut -c1-200 | tee $OUT/start-up.log  # where start-up went
python3 bench/gpu/triton_cache.py > $OUT/variants-at-ready.txt; echo "variants at ready: $(wc -l < $OUT/variants-at-ready.txt)"
for k in $(seq 1 ${RUNS:-3}); do
  echo "== cold-start run $k: concurrency 32, 128 x (512 -> 256)"
  timeout 100 $b --num-prompts 128 --max-concurrency 32 --input-len 512 --output-len 256 --seed $k --server-pid $pid --output-json $OUT/c32-run$k.json 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed|CPU of"
  echo "compiled since ready:"; python3 bench/gpu/triton_cache.py --since $OUT/variants-at-ready.txt | tee $OUT/variants-after-run$k.txt | cut -c1-200
done
python3 - "$OUT" <<'PY'  # the issue's measure: run 1 against run 2
import json, sys
runs = [json.load(open(f"{sys.argv[1]}/c32-run{k}.json")) for k in (1, 2)]
tok, p90 = ([r["output_token_throughput"] for r in runs], [r["ttft_ms"]["p90"] for r in runs])
print(f"run 1 against run 2: output tok/s {100 * (tok[0] / tok[1] - 1):+.1f}%, TTFT p90 {100 * (p90[0] / p90[1] - 1):+.1f}%")
PY
kill -TERM $pid; wait $pid; echo "server exit $?"
for n in ${API_COUNTS-1 2 4}; do
  python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 --api-server-count $n ${SERVE_ARGS:-} > /tmp/server-n$n.log 2>&1 &
  pid=$!
  wait_ready $pid || { tail -30 /tmp/server-n$n.log; exit 1; }
  echo "== $n API processes: concurrency 256, 1024 x (512 -> 256), pyinfer client"
  timeout 150 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --server-pid $pid --output-json $OUT/c256-n$n.json 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed|CPU of"
  echo "== $n API processes: the same from two client processes of 128 each"
  clients=()
  for c in 1 2; do
    timeout 150 $b --num-prompts 512 --max-concurrency 128 --input-len 512 --output-len 256 --seed $((c + 10)) --output-json $OUT/c256-n$n-client$c.json > /tmp/client$c.txt 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}"
  grep -hE "output token|TTFT " /tmp/client1.txt /tmp/client2.txt
  kill -TERM $pid; wait $pid; echo "server exit $?"
done
[ "${PROFILE:-1}" = 1 ] || exit 0
command -v py-spy >/dev/null || export PATH=/tmp/site/bin:$PATH
py-spy record --subprocesses --nonblocking -r 50 -f raw -o $OUT/profile-c256.txt -- \
  python3 -m pyinfer.cli serve --model $dir --load-format dummy --served-model-name dummy --port 8000 ${SERVE_ARGS:-} > /tmp/server2.log 2>&1 &
spy=$!
sleep 1; pid=$(pgrep -f "pyinfer.cli serve" -P $spy | head -1)
wait_ready $spy || { tail -30 /tmp/server2.log; exit 1; }
( for _ in $(seq 1 60); do ps -o pid=,pcpu=,comm= --ppid $pid -p $pid | tr '\n' ' '; echo; sleep 2; done ) > $OUT/cpu-c256.txt 2>&1 &
mon=$!
echo "== under py-spy: concurrency 256, 1024 x (512 -> 256)"
timeout 150 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --server-pid $pid --output-json $OUT/c256.json 2>&1 | grep -E "output token|TTFT|TPOT|ITL|failed|CPU of"
kill $mon 2>/dev/null
kill -TERM $pid; wait $spy; echo "py-spy exit $?"
head -c 300 $OUT/profile-c256.txt; echo; wc -l $OUT/profile-c256.txt
