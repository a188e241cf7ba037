#!/usr/bin/env bash
# The whole test suite, from a fresh machine: a virtual environment with flowbatch and its
# test tools, then the linter, the formatter check, the type checker and pytest.
# Services the tests need (sshd, Slurm, PostgreSQL, Chromium) are installed and started by
# the tests themselves (tests/services/*.py) when a test needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOWBATCH_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
echo "== ruff check"; "$VENV/bin/ruff" check flowbatch tests bench
echo "== ruff format --check"; "$VENV/bin/ruff" format --check flowbatch tests bench
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/pytest" -q "$@"
