#!/usr/bin/env bash
# Set up flowbatch in a virtual environment (a plain `pip install .`), create a site with
# the embedded defaults (SQLite index, local executor), install the Hello World benchmark,
# submit two requests, run the daemon until the queue is idle, and print the leaderboard.
set -euo pipefail
# the site: a relative path is taken from where the script was started
SITE=$(realpath -m "${1:-demo-site}")
cd "$(dirname "$0")/.."
VENV=${FLOWBATCH_VENV:-.venv-demo}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check .
fb() { "$VENV/bin/flowbatch" --site "$SITE" "$@"; }
fb init
if [ "$(id -u)" != 0 ] && ! grep -q '^teams:' "$SITE/flowbatch.yaml"; then
  # the example requests name the groups alice and bob, which only root may use for
  # anyone: here they are teams of this user's (see `teams` in the README)
  me=$(id -un)
  printf '\n# added by scripts/demo.sh: the example groups, for %s\nteams: {alice: [%s], bob: [%s]}\n' \
    "$me" "$me" "$me" >> "$SITE/flowbatch.yaml"
fi
fb install examples/helloworld --id helloworld
fb submit examples/helloworld/requests/alice.yaml
fb submit examples/helloworld/requests/bob.yaml
fb daemon --until-idle
fb runs list
echo
fb ranking helloworld
echo
echo "leaderboard: $SITE/results/helloworld/leaderboard.html"
