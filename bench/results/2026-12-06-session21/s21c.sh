# session 21 call 3: the third part; vLLM's client and ours against pyinfer serve (2 API processes)
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/; ls /tmp/vb; date +%T
API_COUNTS=2 timeout 560 bash bench/gpu/vllm_client.sh 2>&1 | grep -vE "it/s\]|%\|"
date +%T
