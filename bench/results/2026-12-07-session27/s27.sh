#!/usr/bin/env bash
# One call: on an H200, issue 24's compact targets (.ab/s26q.sh) then the A/B of the listeners (.ab/ab27.sh);
# on anything else, the A/B alone.
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ "$name" == *H200* ]]; then bash .ab/s26q.sh; fi
bash .ab/ab27.sh
