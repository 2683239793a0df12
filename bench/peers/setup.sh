#!/bin/sh
# Create .venv-peers (the peers bench/gateway.py runs beside Keyrack) from requirements.txt.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv-peers"
test -d "$venv" || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q -r "$root/bench/peers/requirements.txt"
echo "peers venv ready: $venv"
