#!/usr/bin/env bash
# The engine's GPU figures (1B batch 1, TTFT of 2,048 tokens, offline 1,024 x (512 -> 256)) of an earlier
# tree and of this one, alternating, in one call: bash bench/gpu/before_after.sh DIR (DIR: the earlier
# tree, e.g. `git archive REF | tar -x -C .before`, carried). JSON under $OUT/before and $OUT/after.
source bench/gpu/setup.sh >/dev/null 2>&1 || exit 1
before=$(cd "$1" && pwd); after=$PWD
d="latency --load-format dummy --model llama-3.2-1b"
declare -A runs=(
  [lat-1b]="$d --max-num-seqs 16"
  [ttft-1b]="$d --input-len 2048 --output-len 4 --iters 5"
  [tput-1b]="throughput --load-format dummy --model llama-3.2-1b --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192"
)
mkdir -p $OUT/before $OUT/after
for name in lat-1b ttft-1b tput-1b; do
  for side in before after; do
    dir=$before; [ $side = after ] && dir=$after
    echo "== $name, $side"
    (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 200 python3 -m pyinfer.cli bench ${runs[$name]} --output-json $OUT/$side/$name.json 2>&1 \
      | grep -E "tok/s|TTFT|first|pyinfer|bound" | grep -v "^engine")
  done
done
