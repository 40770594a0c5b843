# Sourced at the start of every command on the lent GPU machine: wheels it lacks, import path, logs.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# wait_ready PID: true once the server on :8000 answers /ready, false if PID exits first or after 60 s
wait_ready() { for _ in $(seq 1 240); do curl -sf localhost:8000/ready >/dev/null && return 0; kill -0 $1 2>/dev/null || return 1; sleep 0.25; done; return 1; }
