#!/usr/bin/env bash
# The GPU tests' own needs beside ../shared/gpu/fetch-wheels.sh's: jsonschema (it validates constrained
# output), for the device's Python 3.12, into .whl where bench/gpu/setup.sh installs from.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download -q -d .whl --python-version 3.12 --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 jsonschema
