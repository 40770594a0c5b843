#!/usr/bin/env bash
# Session 31, first call on whichever card comes. An H200: call 1 of 3 (s29h1.sh, stages vLLM's part aa).
# Anything else: s30c.sh with a cold start and one pair (77110f4 against this tree at c256).
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ "$name" == *H200* ]]; then bash .ab/s29h1.sh; else COLD=1 PAIRS=1 bash .ab/s30c.sh; fi
