#!/usr/bin/env bash
# Issue 22 on a GPU: a decode step of 1, 16 and 64 rows under a JSON schema against the same rows
# unconstrained, with the grammars in the engine's process (0) and in 2 and 4 worker processes, on the
# dummy 1B and 8B shapes (graphs on); then the GPU tests. Carry .whl (the tests validate with jsonschema:
# `../shared/gpu/fetch-wheels.sh jsonschema jsonschema-specifications referencing rpds-py attrs`) and
# .gpu-tokenizer (SmolLM2's: `Tokenizer(default_model_path()).hf.save_pretrained(".gpu-tokenizer")`).
source bench/gpu/setup.sh || exit 1
for model in llama-3.2-1b llama-3.1-8b; do
  echo "== $model"
  timeout 200 python3 bench/structured_output.py $model --device cuda --load-format dummy --tokenizer .gpu-tokenizer \
    --grammar-workers ${WORKERS:-0,2,4} 2>&1 | grep -E "device|rows|compile|Error|error" | grep -v Warning
done
timeout 240 python3 -m pytest -q -m gpu tests/gpu tests/kernels --tb=short 2>&1 | grep -v Warning | tail -40
