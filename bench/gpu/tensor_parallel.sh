#!/usr/bin/env bash
# Issue 28 on a lent multi-GPU machine, one call: TP=1 against TP=N (TP, default "2") on the 8B shape (MODEL), with
# NVLink multicast off as KINDS.md asks. Greedy tokens of mixed prompts for 64 tokens (float32, bench/gpu/tp_greedy.py),
# then batch-1 decode, TTFT of 2,048 tokens and offline 1,024 x (512 -> 256), each beside its bound (the bound of
# N GPUs side by side). Results under $OUT.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
model=${MODEL:-llama-3.1-8b}
b="python3 -m pyinfer.cli bench"
for tp in 1 ${TP:-2}; do
  echo "== TP=$tp: greedy tokens"
  timeout 300 python3 bench/gpu/tp_greedy.py $model $tp > $OUT/greedy-tp$tp.json 2> $OUT/greedy-tp$tp.log || tail -5 $OUT/greedy-tp$tp.log
  d="--load-format dummy --model $model --tensor-parallel-size $tp"
  echo "== TP=$tp: batch 1"
  timeout 200 $b latency $d --max-num-seqs 16 --output-json $OUT/lat-tp$tp.json 2>&1 | grep -E "tok/s|bound|first"
  echo "== TP=$tp: TTFT of 2,048 tokens"
  timeout 200 $b latency $d --input-len 2048 --output-len 4 --iters 5 --output-json $OUT/ttft-tp$tp.json 2>&1 | grep -E "bound|first"
  echo "== TP=$tp: offline 1,024 x (512 -> 256)"
  timeout 300 $b throughput $d --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs 256 \
    --max-num-batched-tokens 8192 --output-json $OUT/tput-tp$tp.json 2>&1 | grep -E "tok/s|bound"
done
python3 - "$OUT" ${TP:-2} <<'PY'
import json, sys
out, sizes = sys.argv[1], sys.argv[2:]
one = json.load(open(f"{out}/greedy-tp1.json"))
for tp in sizes:
    other = json.load(open(f"{out}/greedy-tp{tp}.json"))
    same = sum(a["tokens"] == b["tokens"] for a, b in zip(one, other))
    diff = max(abs(x - y) for a, b in zip(one, other) for x, y in zip(a["logprobs"], b["logprobs"]))
    print(f"TP={tp}: {same}/{len(one)} prompts with TP=1's 64 greedy tokens; largest logprob difference {diff:.2e}")
PY
