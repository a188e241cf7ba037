#!/usr/bin/env bash
# Set up flowbatch in a virtual environment (a plain `pip install .`), create a site with
# the embedded defaults (SQLite index, local executor), install the Hello World benchmark,
# submit two requests, run the daemon until the queue is idle, and print the leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${1:-demo-site}
VENV=${FLOWBATCH_VENV:-.venv-demo}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check .
fb() { "$VENV/bin/flowbatch" --site "$SITE" "$@"; }
fb init
fb install examples/helloworld --id helloworld
fb submit examples/helloworld/requests/alice.yaml
fb submit examples/helloworld/requests/bob.yaml
fb daemon --until-idle
fb runs list
echo
fb ranking helloworld
echo
echo "leaderboard: $SITE/results/helloworld/leaderboard.html"
