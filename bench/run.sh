#!/usr/bin/env bash
# The benchmarks, one command: `bash bench/run.sh [--quick] [python -m bench options]`.
# Makes the project's virtual environment if missing (the peers get their own under
# bench/.venvs/ on first use), then writes BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOWBATCH_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e .
fi
exec "$VENV/bin/python" -m bench "$@"
