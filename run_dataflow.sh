#!/usr/bin/env bash
# Launch the CloudZero AnyCost connector (`python -m pipeline`) on Google Cloud Dataflow.
# Configuration comes from environment variables; run `./run_dataflow.sh --help` for the list.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./run_dataflow.sh [--print] [--help] [--] [PIPELINE ARGS...]

Launches `python -m pipeline` on Dataflow (DataflowRunner, --setup_file ./setup.py), reading
the API key on the workers from Google Secret Manager. Arguments after the script's own flags
are passed to the pipeline unchanged (pipeline flags such as --operation or --verify, or Beam
options such as --max_num_workers or --labels=team=finops). With --watch, the script adds
--streaming: the job polls the patterns and uploads each new file until it is cancelled.

Script flags:
  --print   print the exact command, shell-quoted on one line, and launch nothing
  --help    show this help
  --        end of the script's flags; everything after it goes to the pipeline

Required environment:
  PROJECT          Google Cloud project of the Dataflow job
  REGION           Dataflow region, e.g. europe-west1
  TEMP_LOCATION    gs:// folder for Dataflow temp and staging files
  INPUT            CBF files to upload, a glob such as gs://bucket/cbf/2024-09/*.csv
                   (add more patterns with extra `--input PATTERN` arguments)
  CONNECTION_ID    the AnyCost Stream connection every row goes to, or
  STREAM_COLUMN    the column naming each row's connection (exactly one of the two)
  API_KEY_SECRET   Secret Manager version holding the key:
                   projects/P/secrets/S/versions/V (the resource name, never the key)

Optional environment:
  DEAD_LETTER_PATH prefix of the rejected-row files   (default TEMP_LOCATION/<run id>/rejected)
  REPORT_PATH      JSON run report                    (default TEMP_LOCATION/<run id>/report.json)
  STATE_PATH       delivery records, so a rerun resumes (default TEMP_LOCATION/cloudzero-state)
  JOB_NAME         Dataflow job name: lower-case letters, digits and '-'
  PYTHON           interpreter to use (default .venv/bin/python if present, else python3)

The key itself is never a flag: the script refuses to run when any argument holds the value
of CLOUDZERO_API_KEY, and it removes CLOUDZERO_API_KEY from the launched process.
The workers' service account needs roles/secretmanager.secretAccessor on the secret.

Exit status: the pipeline's own; 2 for a configuration problem (one line naming the variable).
EOF
}

die() {
  echo "run_dataflow.sh: $*" >&2
  exit 2
}

print_only=0
while (($#)); do
  case "$1" in
    --print) print_only=1; shift ;;
    --help|-h) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")"

for name in PROJECT REGION TEMP_LOCATION INPUT API_KEY_SECRET; do
  [[ -n "${!name:-}" ]] || die "$name is not set (see ./run_dataflow.sh --help)"
done
if [[ -n "${CONNECTION_ID:-}" && -n "${STREAM_COLUMN:-}" ]]; then
  die "set CONNECTION_ID or STREAM_COLUMN, not both"
fi
if [[ -z "${CONNECTION_ID:-}" && -z "${STREAM_COLUMN:-}" ]]; then
  die "CONNECTION_ID or STREAM_COLUMN is not set (exactly one is needed)"
fi
[[ "$TEMP_LOCATION" == gs://?* ]] || die "TEMP_LOCATION must be a gs:// path, not $TEMP_LOCATION"
# Never echo API_KEY_SECRET when it is wrong: someone may have pasted the key itself there.
[[ "$API_KEY_SECRET" =~ ^projects/[^/]+/secrets/[^/]+/versions/[^/]+$ ]] \
  || die "API_KEY_SECRET must be a Secret Manager version name projects/P/secrets/S/versions/V (the name, not the key)"
if [[ -n "${JOB_NAME:-}" && ! "$JOB_NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  die "JOB_NAME must be lower-case letters, digits and '-', starting with a letter, not $JOB_NAME"
fi

if [[ -n "${PYTHON:-}" ]]; then
  python_bin="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  python_bin="$PWD/.venv/bin/python"
else
  python_bin=python3
fi

temp="${TEMP_LOCATION%/}"
cmd=("$python_bin" -m pipeline
  --runner=DataflowRunner
  --setup_file ./setup.py
  "--project=$PROJECT"
  "--region=$REGION"
  "--temp_location=$temp"
  "--input=$INPUT")
if [[ -n "${CONNECTION_ID:-}" ]]; then
  cmd+=("--connection_id=$CONNECTION_ID")
else
  cmd+=("--stream_column=$STREAM_COLUMN")
fi
cmd+=("--api_key_secret=$API_KEY_SECRET"
  "--state_path=${STATE_PATH:-$temp/cloudzero-state}")
[[ -z "${DEAD_LETTER_PATH:-}" ]] || cmd+=("--dead_letter_path=$DEAD_LETTER_PATH")
[[ -z "${REPORT_PATH:-}" ]] || cmd+=("--report_path=$REPORT_PATH")
[[ -z "${JOB_NAME:-}" ]] || cmd+=("--job_name=$JOB_NAME")
# --watch makes the job a streaming one on Dataflow (it polls the patterns until cancelled).
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i],,}" in
    --watch|--watch=true|--watch=1|--watch=yes)
      next="${args[i + 1]:-}"
      if [[ "${args[i],,}" != --watch || ! "${next,,}" =~ ^(false|0|no)$ ]]; then
        cmd+=("--streaming")
        break
      fi ;;
  esac
done
cmd+=("$@")

# The key never travels as a flag: refuse a command that holds its value or names it.
key="${CLOUDZERO_API_KEY:-}"
for arg in "${cmd[@]}"; do
  if [[ -n "$key" && "$arg" == *"$key"* ]]; then
    die "refusing to launch: an argument contains the value of CLOUDZERO_API_KEY; keep the key in Secret Manager and set API_KEY_SECRET"
  fi
  flag="${arg%%=*}"
  case "${flag,,}" in
    --api_key|--api-key|--apikey|--key|--cloudzero_api_key|--cloudzero-api-key)
      die "refusing to launch: the API key is never a flag; keep it in Secret Manager and set API_KEY_SECRET" ;;
    --api_key_env|--api-key-env)
      die "--api_key_env cannot be used here: on Dataflow the key is read from Secret Manager (API_KEY_SECRET)" ;;
  esac
done

if ((print_only)); then
  line=""
  for arg in "${cmd[@]}"; do
    line+="${line:+ }$(printf '%q' "$arg")"
  done
  printf '%s\n' "$line"
  exit 0
fi

unset CLOUDZERO_API_KEY
exec "${cmd[@]}"
