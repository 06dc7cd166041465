#!/usr/bin/env bash
# Installs everything the tests need (into .venv) and runs the whole suite.
# Tests only talk to servers they start on 127.0.0.1 and pin Beam's in-process runner.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
