# session 22 call 3: the third part; pyinfer serve (2 API processes) and then vllm serve on the same card, each under
# vLLM's client at concurrency 256 and rate 80/s (our client too for pyinfer): vLLM is the baseline on whatever card came
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/; ls /tmp/vb; date +%T
API_COUNTS=2 timeout 330 bash bench/gpu/vllm_client.sh 2>&1 | grep -vE "it/s\]|%\|"
date +%T
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
d=/tmp/dummy-llama-3.2-1b
PYTHONPATH=/tmp/vsite:/tmp/vdeps:/tmp/vextra:$PYTHONPATH VLLM_USE_FLASHINFER_SAMPLER=0 python3 -m vllm.entrypoints.cli.main serve $d \
  --load-format dummy --served-model-name dummy --port 8000 --dtype bfloat16 --max-model-len 4096 --gpu-memory-utilization 0.85 > $OUT/vllm-server.log 2>&1 &
pid=$!; t0=$(date +%s)
for _ in $(seq 1 200); do curl -sf localhost:8000/health >/dev/null && break; kill -0 $pid || break; sleep 1; done
echo "vllm ready after $(( $(date +%s) - t0 )) s"
vc() { label=$1; shift; timeout 100 env PYTHONPATH=/tmp/vsite:/tmp/vdeps:/tmp/vextra:$PYTHONPATH python3 -m vllm.entrypoints.cli.main bench serve \
    --backend vllm --base-url http://127.0.0.1:8000 --model dummy --tokenizer $d --dataset-name random \
    --random-input-len 512 --random-output-len 256 --ignore-eos --seed 0 "$@" > $OUT/$label.txt 2>&1
  grep -E "throughput|TTFT|TPOT|ITL|Successful|Failed" $OUT/$label.txt | head -24; }
timeout 60 python3 -m pyinfer.cli bench serve --base-url http://127.0.0.1:8000 --model dummy --num-prompts 256 --max-concurrency 64 --input-len 512 --output-len 256 2>&1 | grep -E "output token|TTFT "
echo "== vllm serve: vllm client c256"; vc vllmserver-c256 --num-prompts 1024 --max-concurrency 256
echo "== vllm serve: vllm client rate 80"; vc vllmserver-rate80 --num-prompts 800 --request-rate 80
kill -TERM $pid; wait $pid; date +%T
