#!/usr/bin/env bash
# H200 call 3 of 3 (stages vLLM's part ac): issue 24's targets under vLLM's client (c256, rate 80/s) and ours
# (rate 80/s), 2 API processes.
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; date +%T
export TRITON_CACHE_DIR=/tmp/triton-cache
API_COUNTS=2 timeout 560 bash bench/gpu/vllm_client.sh
