# session 20 on an H100: main (a782a3f) GPU tests, memory, then main against the pre-padding 80854e4 (.main-src), alternately
source bench/gpu/setup.sh || exit 1
d=/tmp/dummy-llama-3.2-1b; python3 bench/gpu/make_dummy_folder.py llama-3.2-1b $d >/dev/null || exit 1
echo "== gpu tests $(date +%T)"; timeout 170 python3 -m pytest -q -m gpu tests/gpu tests/kernels -p no:cacheprovider 2>&1 | tail -4
echo "== first_runs_engine $(date +%T)"; TRITON_CACHE_DIR=/tmp/triton-f timeout 70 python3 bench/gpu/first_runs_engine.py $d 3 2>&1 | grep -E "^run|slowest|chose the"
bash .ab/s20b.sh 2>&1 | grep -v -E "^NVIDIA"
