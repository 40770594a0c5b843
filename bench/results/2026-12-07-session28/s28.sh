#!/usr/bin/env bash
# One call: on an H200, issue 24's compact targets (.ab/s26q.sh) then one A/B pair against 77110f4;
# on anything else, two A/B pairs.
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ "$name" == *H200* ]]; then bash .ab/s26q.sh; ROUNDS=1 bash .ab/ab28.sh; else ROUNDS=2 bash .ab/ab28.sh; fi
