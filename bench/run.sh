#!/usr/bin/env bash
# The benchmarks, one command: `bash bench/run.sh [--quick] [python -m bench options]`.
# Makes the project's virtual environment if missing (it runs the harness); flowbatch
# itself is measured from a plain `pip install .` of the work tree and each peer from its
# own, all under bench/.venvs/ (made on first use, flowbatch's again when the tree
# changed; `--here` measures the harness's own flowbatch), then writes BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOWBATCH_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e .
fi
exec "$VENV/bin/python" -m bench "$@"
