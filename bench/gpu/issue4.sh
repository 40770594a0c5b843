#!/usr/bin/env bash
# The issue-4 benchmarks on the lent GPU, in one call: bash bench/gpu/issue4.sh (JSON under $OUT).
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
b="python3 -m pyinfer.cli bench"
d="--load-format dummy"
# ONLY="lat-1b ttft-8b" runs a subset
run() { name=$1; shift; [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $name "* ]] || return 0; echo "== $name: $*"; timeout 240 "$@" --output-json "$OUT/$name.json" 2>&1 | grep -E "tok/s|TTFT|first|pyinfer|bound" | grep -v "^engine"; }
run lat-1b $b latency $d --model llama-3.2-1b --max-num-seqs 16
run lat-8b $b latency $d --model llama-3.1-8b --max-num-seqs 16
run ttft-1b $b latency $d --model llama-3.2-1b --input-len 2048 --output-len 4 --iters 5
run ttft-8b $b latency $d --model llama-3.1-8b --input-len 2048 --output-len 4 --iters 5
tp="throughput $d --model llama-3.2-1b --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192"
run tput-1b $b $tp
run lat-1b-eager $b latency $d --model llama-3.2-1b --max-num-seqs 16 --enforce-eager
run lat-1b-nooverlap $b latency $d --model llama-3.2-1b --max-num-seqs 16 --no-overlap
run tput-1b-eager $b $tp --enforce-eager
run tput-1b-nooverlap $b $tp --no-overlap
