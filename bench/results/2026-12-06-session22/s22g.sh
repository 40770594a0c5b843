# session 22: HEAD on whatever GPU came (an H100): ready time, c256 (our client), rate 80 (our client), batch 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; lscpu | grep "Model name"; date +%T
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
b="python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy"
t0=$(date +%s.%N)
python3 -m pyinfer.cli serve --model $d --load-format dummy --served-model-name dummy --port 8000 > $OUT/server.log 2>&1 & pid=$!
wait_ready $pid || { tail -30 $OUT/server.log; exit 1; }
echo "ready after $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s (empty Triton cache)"
for k in 1 2; do echo "== c32 run $k"; timeout 40 $b --num-prompts 128 --max-concurrency 32 --input-len 512 --output-len 256 --output-json $OUT/c32-run$k.json 2>&1 | grep -E "output token|TTFT"; done
echo "== c256, one client process"; timeout 60 $b --num-prompts 1024 --max-concurrency 256 --input-len 512 --output-len 256 --output-json $OUT/c256.json 2>&1 | grep -E "output token|TTFT|ITL|failed"
echo "== rate 80"; timeout 40 $b --num-prompts 800 --request-rate 80 --input-len 512 --output-len 256 --output-json $OUT/rate80.json 2>&1 | grep -E "output token|TTFT|TPOT|failed"
$b --num-prompts 4 --max-concurrency 1 --input-len 2048 --output-len 16 >/dev/null 2>&1
echo "== batch 1, 2048 -> 256"; timeout 30 $b --num-prompts 8 --max-concurrency 1 --input-len 2048 --output-len 256 2>&1 | grep -E "output token|TTFT|TPOT"
echo "== logprobs with a stop string, streamed"; curl -sN localhost:8000/v1/completions -H 'content-type: application/json' -d '{"model":"dummy","prompt":"hello","max_tokens":8,"logprobs":2,"stream":true,"stop":["xyz"]}' | head -c 600; echo
kill -TERM $pid; wait $pid; echo "exit $?"; date +%T
