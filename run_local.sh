#!/usr/bin/env bash
# The main job on the bundled sample, against the bundled local AnyCost emulator.
# On a fresh machine: creates .venv, installs the project, starts the emulator on a free
# loopback port, runs the pipeline, prints the report and what the emulator now holds,
# and stops the emulator. Extra arguments go to the pipeline (e.g. --dry_run --output_dir out/bodies).
set -euo pipefail
cd "$(dirname "$0")"

./scripts/bootstrap.sh

# A throw-away key shared by the emulator and the pipeline; never a real CloudZero key.
CLOUDZERO_API_KEY="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')"
export CLOUDZERO_API_KEY
# Each run starts a new emulator, so the delivery ledger of an earlier run means nothing to it.
rm -rf out/ledger
mkdir -p out
port_file="$(mktemp)"
.venv/bin/python -m anycost_emulator --port 0 --port_file "$port_file" > out/emulator.log 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true; rm -f "$port_file"' EXIT
for _ in $(seq 100); do [[ -s "$port_file" ]] && break; sleep 0.1; done
[[ -s "$port_file" ]] || { echo "the emulator did not start; see out/emulator.log" >&2; exit 1; }
api_url="http://127.0.0.1:$(cat "$port_file")"
echo "AnyCost emulator on $api_url"

status=0
.venv/bin/python -m pipeline \
  --input 'examples/sample/*.csv' --input 'examples/sample/*.csv.gz' --input 'examples/sample/*.parquet' \
  --stream_column connection_id \
  --api_url "$api_url" \
  --dead_letter_path out/rejected \
  --report_path out/report.json \
  --state_path out/ledger \
  "$@" || status=$?

echo
echo "What the emulator now holds:"
.venv/bin/python -m anycost_emulator.stats "$api_url"
exit "$status"
