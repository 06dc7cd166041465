#!/usr/bin/env bash
# Creates .venv if missing and installs the project with its test extras. Re-installs only
# when setup.py changed since the last install, so repeated runs start quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
marker=.venv/.installed-setup-py
if [[ ! -f "$marker" ]] || ! cmp -s setup.py "$marker"; then
  .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
  .venv/bin/python -m pip install --quiet -e ".[test]"
  cp setup.py "$marker"
fi
