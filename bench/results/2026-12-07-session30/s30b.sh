#!/usr/bin/env bash
# H200 call 2 of 3, short (stages vLLM's part ab): the grammar workers' GPU test, now with jsonschema.
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null; ls /tmp/vb
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; date +%T
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
timeout 150 python3 -m pytest -q -o addopts="" -m gpu --tb=short -p no:cacheprovider \
  tests/gpu/test_gpu_engine.py::test_constrained_decoding_with_grammar_workers_on_graphs 2>&1 | grep -vE "^\s*$" | tail -30
