#!/usr/bin/env bash
# The Dataflow job-graph tests (tests_dataflow/, see docs/dataflow-offline-check.md): builds
# the command line's and the Beam API's Dataflow jobs with DataflowRunner's dry run, offline.
# Creates .venv-gcp (the project with its gcp and test extras) if missing and re-installs only
# when setup.py changed, like scripts/bootstrap.sh. The main suite (tests/) never needs it.
# The tests run in a network namespace of their own when the machine allows one (unshare), so
# that nothing they start, subprocesses included, can reach the network.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-gcp
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
marker=$venv/.installed-setup-py
if [[ ! -f "$marker" ]] || ! cmp -s setup.py "$marker"; then
  $venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
  $venv/bin/python -m pip install --quiet -e ".[gcp,test]"
  cp setup.py "$marker"
fi
tests=($venv/bin/python -m pytest -q -p no:cacheprovider tests_dataflow "$@")
if unshare --user --map-root-user --net true 2>/dev/null; then
  exec unshare --user --map-root-user --net "${tests[@]}"
fi
echo "dataflow_check.sh: no network namespace here (unshare); the tests' own guard still refuses the network" >&2
exec "${tests[@]}"
