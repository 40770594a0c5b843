#!/usr/bin/env bash
# Builds deploy/Dockerfile with podman and runs the image as a cluster would: an arbitrary non-root UID in
# group 0, a read-only root with tmpfs for the cache and /tmp. Checks /ready, the web UI, /metrics, chat
# completions through the official openai client, and that SIGTERM drains and exits 0 within the grace period.
# Run as root from anywhere: bash deploy/test-image.sh. Settings: PORT, GRACE, IMAGE, BASE, READY_TIMEOUT,
# INDEX_PORT (where a local torch wheel is served, when PyTorch's index is out of reach).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18080}
# Fixed: the index's URL is a build argument, part of the torch layer's cache key (a random port rebuilt it).
INDEX_PORT=${INDEX_PORT:-18081}
GRACE=${GRACE:-40}  # podman stop's grace: above the server's default drain (PYINFER_DRAIN_TIMEOUT, 30 s)
IMAGE=${IMAGE:-localhost/pyinfer:cpu}
BASE=${BASE:-localhost/debian:bookworm-slim}
READY_TIMEOUT=${READY_TIMEOUT:-300}
TORCH_VERSION=2.13.0  # the Dockerfile's default
NAME=pyinfer-test-$$
START=$SECONDS
say() { printf '[%4ss] %s\n' "$((SECONDS - START))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  [ -z "${INDEX_PID:-}" ] || kill "$INDEX_PID" 2>/dev/null || true
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
WORK=$(mktemp -d)

# 1. podman, set up as these machines need it (shared/containers.md): crun fails on their hybrid cgroups,
# runc with cgroupfs and no default ulimits works. An existing containers.conf is left alone.
if ! command -v podman >/dev/null; then
  say "installing podman, runc, debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
if [ ! -f /etc/containers/containers.conf ]; then
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
    >/etc/containers/containers.conf
fi

# 2. The base image: with no registry at hand, a minimal bookworm from Debian's mirror, imported once.
if [[ $BASE == localhost/* ]] && ! podman image exists "$BASE"; then
  mirror=$(grep -rh '^URIs' /etc/apt/sources.list.d/ | awk '$2 ~ /\/debian$/ {print $2; exit}')
  say "debootstrap bookworm from ${mirror:?no Debian mirror in apt sources} -> $BASE"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log"
  tar -C "$WORK/rootfs" -c . | podman import --quiet - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

# 3. The CPU torch wheel: from PyTorch's index where it is reachable, else from a local wheel (pip's
# find-links folder) served over HTTP on loopback as a one-package index, which the build reaches through
# the host's network.
build_args=(--build-arg "BASE=$BASE")
if ! python3 -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/', timeout=10)" 2>/dev/null; then
  wheel=$(find "${PIP_FIND_LINKS:-/opt/wheels}" -maxdepth 1 -name "torch-$TORCH_VERSION+cpu-cp311-*x86_64.whl" | head -1)
  [ -n "$wheel" ] || fail "PyTorch's CPU index is unreachable and no local torch-$TORCH_VERSION+cpu wheel was found"
  mkdir -p "$WORK/index/torch" && ln -s "$wheel" "$WORK/index/torch/"
  python3 -c "import socket; socket.create_server(('127.0.0.1', $INDEX_PORT)).close()" 2>/dev/null \
    || fail "port $INDEX_PORT is in use: set INDEX_PORT"
  python3 -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$INDEX_PORT" >/dev/null 2>&1 &
  INDEX_PID=$!
  build_args+=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$INDEX_PORT/")
  say "PyTorch's index unreachable: serving $(basename "$wheel") on 127.0.0.1:$INDEX_PORT"
fi

# The host's CA bundle for pip, for where a TLS-inspecting proxy stands between this machine and PyPI.
host_ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$host_ca" ]; then
  build_args+=(--volume "$host_ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

# 4. Build. Docker format: OCI images have no HEALTHCHECK.
say "building $IMAGE"
t=$SECONDS
podman build --network host --format docker "${build_args[@]}" -t "$IMAGE" -f deploy/Dockerfile . \
  >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built in $((SECONDS - t)) s; image size $((size / 1000000)) MB"

# 5. Run it as OpenShift would: arbitrary UID, group 0, read-only root, tmpfs where it writes (exec: the
# cache may hold kernels built at start, which are loaded from there).
python3 -c "import socket; socket.create_server(('127.0.0.1', $PORT)).close()" 2>/dev/null \
  || fail "port $PORT is in use: set PORT"
t=$SECONDS
# podman's complaints that there is no systemd to time the HEALTHCHECK go to a log: it is run by hand.
podman run -d --name "$NAME" --network host --user 10001:0 --read-only \
  --tmpfs /tmp --tmpfs /var/cache/pyinfer:rw,exec -e PYINFER_PORT="$PORT" "$IMAGE" >/dev/null 2>>"$WORK/podman.log"
url=http://127.0.0.1:$PORT
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ready")" = 200 ]; do
  [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || { podman logs "$NAME"; fail "container exited"; }
  [ $((SECONDS - t)) -lt "$READY_TIMEOUT" ] || { podman logs "$NAME"; fail "not ready after $READY_TIMEOUT s"; }
  sleep 1
done
say "ready in $((SECONDS - t)) s"

# The prebuilt kernels were used: none built into the cache, no fallback to the PyTorch paths.
# (Outputs are captured before grep -q: under pipefail, its early exit would fail the pipe.)
logs=$(podman logs "$NAME" 2>&1)
! grep -q "CPU kernels unavailable" <<<"$logs" || fail "CPU kernels unavailable"
[ -z "$(podman exec "$NAME" find /var/cache/pyinfer -name '*.so')" ] || fail "kernels were rebuilt at start"
podman healthcheck run "$NAME" || fail "HEALTHCHECK"
grep -qi "<html" <<<"$(curl -sf "$url/")" || fail "web UI"
grep -q "^pyinfer:num_requests_waiting" <<<"$(curl -sf "$url/metrics")" || fail "/metrics"
say "prebuilt kernels in use; HEALTHCHECK, web UI and /metrics answer"

# 6. A chat completion with the official client, and one under a JSON schema (xgrammar, without Triton).
# The client: the checkout's .venv where `make test` installed it, else one of its own.
client=.venv/bin/python
if ! "$client" -c "import openai" 2>/dev/null; then
  say "installing the openai client"
  python3 -m venv "$WORK/client" || fail "python3 -m venv"
  "$WORK/client/bin/pip" install -q openai >/dev/null || fail "pip install openai"
  client=$WORK/client/bin/python
fi
t=$SECONDS
"$client" - "$url/v1" <<'EOF' || fail "chat completion"
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused")
model = client.models.list().data[0].id
reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    max_tokens=32,
    temperature=0,
)
text = reply.choices[0].message.content
print(f"{model}: {text!r}")
assert "Paris" in text, text
# A schema with an enum: short and bounded, so that the small model's reply always completes.
city = {"type": "string", "enum": ["Paris", "Lyon", "Marseille"]}
schema = {"type": "object", "properties": {"capital": city}, "required": ["capital"], "additionalProperties": False}
reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
    max_tokens=64,
    temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
)
answer = json.loads(reply.choices[0].message.content)
print("json_schema:", answer)
assert answer["capital"] in city["enum"], answer
EOF
say "chat completions in $((SECONDS - t)) s"

# 7. SIGTERM: the server drains and exits 0 before podman would resort to SIGKILL.
t=$SECONDS
podman stop -t "$GRACE" "$NAME" >/dev/null 2>>"$WORK/podman.log"
took=$((SECONDS - t))
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
grep -q "draining" <<<"$(podman logs "$NAME" 2>&1)" || fail "no drain in the log"
if [ "$code" != 0 ] || [ "$took" -ge "$GRACE" ]; then fail "stop took $took s (grace $GRACE), exit code $code"; fi
say "stopped by SIGTERM in $took s, exit code 0"
podman rm "$NAME" >/dev/null 2>>"$WORK/podman.log"
say "PASS"
