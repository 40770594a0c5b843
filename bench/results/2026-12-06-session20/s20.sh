# session 20: on an H200 the targets' call (s20a), on an H100 the A/B call (s20c)
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ "$name" == *H200* ]]; then bash .ab/s20a.sh; else bash .ab/s20c.sh; fi
