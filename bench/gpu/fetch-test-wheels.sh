#!/usr/bin/env bash
# The GPU tests' own needs beside the server's: jsonschema (it validates constrained output) and its
# requirements, through ../shared/gpu/fetch-wheels.sh (each wheel without its dependencies, so .whl holds
# one version of each), into .whl where bench/gpu/setup.sh installs from.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/gpu/fetch-wheels.sh jsonschema jsonschema-specifications referencing rpds-py attrs
