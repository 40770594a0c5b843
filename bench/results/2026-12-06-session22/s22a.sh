# session 22 call 1: stage vLLM's first part; issue 24's targets under our client at HEAD (any GPU; the card is printed)
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/; ls /tmp/vb
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; lscpu | grep -E "Model name"; date +%T
ANY_GPU=1 timeout 560 bash bench/gpu/issue24_targets.sh 2>&1 | grep -vE "it/s\]|%\|"
date +%T
