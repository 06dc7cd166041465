#!/usr/bin/env bash
# The real Airflow run, on this machine: Apache Airflow 3 with the Beam provider, in its own
# virtualenv (.venv-airflow, made on first use), runs examples/airflow_local_dag.py with
# `airflow dags test` (temporary AIRFLOW_HOME, sqlite, no webserver or scheduler) against the
# local AnyCost emulator:
#   1. on the bundled sample: the DAG run succeeds, the operator's --labels reach the pipeline;
#   2. on the sample plus a bad row: the DAG run fails, because check_report fails;
#   3. examples/airflow_dag.py's Dataflow DAGs import with the Google provider, and the Beam
#      operator's own conversion of their options gives flags the connector accepts.
# Exit status 0 only when all of that holds. The pipeline runs with the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$SECONDS

./scripts/bootstrap.sh  # the project's .venv, which runs the pipeline

# Versions verified together (pip check is clean); change them together.
requirements=(apache-airflow==3.3.2 apache-airflow-providers-apache-beam==6.3.1
              apache-airflow-providers-google==22.8.0)
venv=.venv-airflow
marker=$venv/.installed
if [[ ! -f "$marker" ]] || [[ "$(cat "$marker")" != "${requirements[*]}" ]]; then
  echo "installing ${requirements[*]} into $venv (about 2 minutes)"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "${requirements[@]}"
  echo "${requirements[*]}" > "$marker"
  echo "installed in $((SECONDS - started)) s"
fi

work="$(mktemp -d)"
emulator=""
cleanup() {
  [[ -n "$emulator" ]] && { kill "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

export AIRFLOW_HOME="$work/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/examples"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$work/airflow/airflow.db"
mkdir -p "$AIRFLOW_HOME"
airflow="$venv/bin/airflow"
"$airflow" db migrate > "$work/migrate.log" 2>&1 || { cat "$work/migrate.log"; exit 1; }

# A throw-away key shared by the emulator and the pipeline; never a real CloudZero key.
CLOUDZERO_API_KEY="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')"
export CLOUDZERO_API_KEY
.venv/bin/python -m anycost_emulator --port 0 --port_file "$work/port" > "$work/emulator.log" 2>&1 &
emulator=$!
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
[[ -s "$work/port" ]] || { echo "the emulator did not start" >&2; cat "$work/emulator.log" >&2; exit 1; }
api_url="http://127.0.0.1:$(cat "$work/port")"

fail() { echo "airflow check FAILED: $1" >&2; exit 1; }

# dag_run NAME INPUT: one `airflow dags test` of the local DAG; sets status, log, states, report.
dag_run() {
  local name=$1 input=$2 conf run_id
  conf="{\"input\": \"$input\", \"api_url\": \"$api_url\", \"output_folder\": \"$work/out-$name\"}"
  log="$work/$name.log"
  local begun=$SECONDS
  status=0
  "$airflow" dags test cloudzero_anycost_local -c "$conf" > "$log" 2>&1 || status=$?
  run_id="$(grep -o 'DagRun Finished: .*' "$log" | grep -o 'run_id=[^,]*' | cut -d= -f2 || true)"
  [[ -n "$run_id" ]] || { tail -40 "$log" >&2; fail "$name: no DAG run finished"; }
  states="$("$airflow" tasks states-for-dag-run cloudzero_anycost_local "$run_id" -o json 2>/dev/null |
            "$venv/bin/python" -c 'import json, sys
print(" ".join(sorted(t["task_id"] + "=" + str(t["state"]) for t in json.load(sys.stdin))))')"
  report="$(find "$work/out-$name" -name report.json 2>/dev/null | head -1 || true)"
  echo "$name: airflow dags test exit $status in $((SECONDS - begun)) s; tasks: $states"
}

# 1. The sample: success, and the labels the operator passes reach the pipeline.
dag_run good "$repo/examples/sample/*"
[[ $status -eq 0 ]] || { grep -E 'cloudzero|rror' "$log" | tail -30 >&2; fail "the DAG run on the sample did not succeed"; }
[[ "$states" == "check_report=success upload_cbf=success" ]] || fail "unexpected task states: $states"
grep -q "cloudzero: labels: app=cloudzero-anycost, team=finops, airflow-version=v" "$log" ||
  fail "the operator's --labels did not reach the pipeline"
.venv/bin/python -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["ok"] is True and r["bodies_sent"] == 4, r' \
  "$report" || fail "the report of the sample run is not ok"
grep -E "Running command:" "$log" | sed 's/.*Running command: /  command: /; s/ \[airflow.*//'

# 2. The sample plus a row with a bad cost: the check task fails the DAG run.
mkdir -p "$work/bad"
cp examples/sample/* "$work/bad/"
printf 'connection_id,time/usage_start,cost/cost\nexample-data,2024-09-03T00:00:00Z,twelve\n' > "$work/bad/zz-bad-row.csv"
dag_run bad "$work/bad/*"
[[ $status -ne 0 ]] || fail "the DAG run with a bad row succeeded"
[[ "$states" == "check_report=failed upload_cbf=failed" ]] || fail "unexpected task states: $states"
grep -q "the CloudZero upload did not deliver everything" "$log" || fail "check_report did not fail on the report"
grep -q "e.g. $work/bad/zz-bad-row.csv row 1: cost/cost = 'twelve'" "$log" || fail "the reason is not in the task log"
.venv/bin/python -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["ok"] is False and r["bodies_sent"] == 0, r' \
  "$report" || fail "the report of the bad run should say nothing was sent"

# 3. The Dataflow DAGs: import, and the real provider's flags parse.
"$venv/bin/python" scripts/airflow_dataflow_args.py "$repo/.venv/bin/python" > "$work/dataflow.log" 2>&1 ||
  { tail -30 "$work/dataflow.log" >&2; fail "examples/airflow_dag.py"; }
tail -1 "$work/dataflow.log"

echo "airflow check passed in $((SECONDS - started)) s"
