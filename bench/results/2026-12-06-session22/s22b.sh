# session 22 call 2: stage vLLM's second part; the 8B cold start on an empty Triton cache
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/; ls /tmp/vb; date +%T
mkdir -p $OUT/8b; OUT=$OUT/8b API_COUNTS= PROFILE=0 MODEL=llama-3.1-8b TRITON_CACHE_DIR=/tmp/triton-8b timeout 300 bash bench/gpu/front_end.sh 2>&1 | grep -vE "it/s\]|%\|" | grep -vE "pyinfer\.(access|engine)" | tail -60
date +%T
