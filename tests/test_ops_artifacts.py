"""The operations artefacts: run_dataflow.sh, the Flex Template, the Airflow DAGs, the wheel
that Dataflow workers install, and where the API key may come from.

Fast and offline: nothing is launched on Google Cloud, the script runs in --print mode or
with a stand-in interpreter, Secret Manager is a fake client, and the DAG files are only
compiled and read with `ast` (Airflow is not installed here). How the real Beam operator turns
pipeline_options into flags is checked with the real provider by scripts/airflow_check.sh,
which CI runs, not re-implemented here.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import pickle
import py_compile
import re
import shlex
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from anycost.delivery import api_key
from anycost import cbf
from anycost import config as run_config
from pipeline import main as cli

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run_dataflow.sh"
METADATA = REPO / "flex_template" / "metadata.json"
DOCKERFILE = REPO / "flex_template" / "Dockerfile"
DAG_FILE = REPO / "examples" / "airflow_dag.py"
LOCAL_DAG_FILE = REPO / "examples" / "airflow_local_dag.py"
AIRFLOW_CHECK = REPO / "scripts" / "airflow_check.sh"

FAKE_KEY = "cz-fake-key-8d1f0c7e55aa"
SECRET = "projects/my-project/secrets/cloudzero-api-key/versions/3"
REQUIRED_ENV = ("PROJECT", "REGION", "TEMP_LOCATION", "INPUT", "API_KEY_SECRET")
BOOLEAN_FLAGS = {"dry_run", "validate_only", "verify", "verify_only", "skip_month_check", "watch"}


# ---------------------------------------------------------------------------------------------
# run_dataflow.sh
# ---------------------------------------------------------------------------------------------

def script_env(**overrides):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PROJECT": "my-project",
        "REGION": "europe-west1",
        "TEMP_LOCATION": "gs://my-bucket/tmp/",
        "INPUT": "gs://my-billing/cbf/2024-09/*.csv",
        "CONNECTION_ID": "conn-1",
        "API_KEY_SECRET": SECRET,
        "CLOUDZERO_API_KEY": FAKE_KEY,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_script(args, env, cwd):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def printed_command(result):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return shlex.split(lines[0])


def test_script_is_executable_bash_with_strict_mode():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text


def test_print_shows_the_dataflow_command_and_passes_extra_args(tmp_path):
    extra = ["--operation", "replace_hourly", "--labels=team=fin ops", "--max_num_workers=3", "a*b"]
    result = run_script(["--print", *extra], script_env(), cwd=tmp_path)
    argv = printed_command(result)
    assert argv[1:3] == ["-m", "pipeline"]
    assert "--runner=DataflowRunner" in argv
    assert argv[argv.index("--setup_file") + 1] == "./setup.py"
    for flag in ("--project", "--region", "--temp_location", "--api_key_secret"):
        assert any(arg.startswith(flag + "=") for arg in argv), flag
    assert "--project=my-project" in argv and "--region=europe-west1" in argv
    assert f"--api_key_secret={SECRET}" in argv
    assert "--input=gs://my-billing/cbf/2024-09/*.csv" in argv
    assert "--connection_id=conn-1" in argv
    assert argv[-len(extra):] == extra  # unchanged, in order, at the end
    assert FAKE_KEY not in result.stdout + result.stderr


def test_printed_command_is_accepted_by_the_pipeline_cli(tmp_path):
    argv = printed_command(run_script(["--print", "--verify"], script_env(), cwd=tmp_path))
    config, beam_args, _wait = cli.parse(argv[3:])
    assert config.api_key_secret == SECRET
    assert config.connection_id == "conn-1"
    assert config.verify is True
    assert config.state_path == "gs://my-bucket/tmp/cloudzero-state"
    assert "--runner=DataflowRunner" in beam_args
    assert "--temp_location=gs://my-bucket/tmp" in beam_args
    assert FAKE_KEY not in " ".join(beam_args)


def test_print_launches_nothing_and_a_real_run_execs_the_same_command(tmp_path):
    record = tmp_path / "called.json"
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(
        "#!/usr/bin/env bash\n"
        f"{shlex.quote(sys.executable)} -c 'import json, os, sys; json.dump("
        "{\"argv\": sys.argv[2:], \"key_in_env\": \"CLOUDZERO_API_KEY\" in os.environ, "
        "\"cwd\": os.getcwd()}, open(sys.argv[1], \"w\"))' "
        f"{shlex.quote(str(record))} \"$@\"\n")
    fake_python.chmod(0o755)
    env = script_env(PYTHON=str(fake_python))

    printed = printed_command(run_script(["--print", "--dry_run=true"], env, cwd=tmp_path))
    assert not record.exists(), "--print must not launch anything"

    result = run_script(["--dry_run=true"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    called = json.loads(record.read_text())
    assert [str(fake_python), *called["argv"]] == printed
    assert called["key_in_env"] is False  # the launched process never sees the key
    assert Path(called["cwd"]) == REPO  # runs from the script's folder, so ./setup.py resolves


def test_stream_column_and_optional_paths(tmp_path):
    env = script_env(CONNECTION_ID=None, STREAM_COLUMN="account_team",
                     DEAD_LETTER_PATH="gs://b/dl/rejected", REPORT_PATH="gs://b/r/report.json",
                     STATE_PATH="gs://b/state", JOB_NAME="cloudzero-2024-09")
    argv = printed_command(run_script(["--print"], env, cwd=tmp_path))
    assert "--stream_column=account_team" in argv
    assert not any(arg.startswith("--connection_id") for arg in argv)
    for expected in ("--dead_letter_path=gs://b/dl/rejected", "--report_path=gs://b/r/report.json",
                     "--state_path=gs://b/state", "--job_name=cloudzero-2024-09"):
        assert expected in argv


@pytest.mark.parametrize("name", REQUIRED_ENV)
def test_missing_required_env_exits_2_naming_it(tmp_path, name):
    for value in (None, ""):
        result = run_script(["--print"], script_env(**{name: value}), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert name in result.stderr
        assert FAKE_KEY not in result.stderr


@pytest.mark.parametrize("overrides", [
    {"CONNECTION_ID": None, "STREAM_COLUMN": None},
    {"CONNECTION_ID": "conn-1", "STREAM_COLUMN": "team"},
])
def test_exactly_one_of_connection_id_and_stream_column(tmp_path, overrides):
    result = run_script(["--print"], script_env(**overrides), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "CONNECTION_ID" in result.stderr and "STREAM_COLUMN" in result.stderr


def test_a_key_pasted_into_api_key_secret_is_refused_and_not_echoed(tmp_path):
    result = run_script(["--print"], script_env(API_KEY_SECRET=FAKE_KEY), cwd=tmp_path)
    assert result.returncode == 2
    assert "API_KEY_SECRET" in result.stderr
    assert FAKE_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("extra", [
    ["--test_namespace", FAKE_KEY],
    [f"--labels=k={FAKE_KEY}"],
    ["--api_key=whatever"],
    ["--api-key=whatever"],  # the hyphen forms the pipeline also accepts
    ["--api_key_env", "CLOUDZERO_API_KEY"],
    ["--api-key-env", "CLOUDZERO_API_KEY"],
])
def test_the_key_is_never_passed_as_a_flag(tmp_path, extra):
    result = run_script(["--print", *extra], script_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert FAKE_KEY not in result.stderr


def test_help_lists_the_environment_and_needs_none(tmp_path):
    result = run_script(["--help"], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=tmp_path)
    assert result.returncode == 0
    for name in (*REQUIRED_ENV, "CONNECTION_ID", "STREAM_COLUMN", "DEAD_LETTER_PATH", "REPORT_PATH",
                 "STATE_PATH", "JOB_NAME", "--print"):
        assert name in result.stdout


# ---------------------------------------------------------------------------------------------
# Flex Template
# ---------------------------------------------------------------------------------------------

def cli_flags():
    """The long flags of the pipeline's parser (without --), except --help, --version and --wait/--no-wait."""
    names = {}
    for action in cli.build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--version", "--wait", "--no-wait"):
                names[option[2:]] = action
    return names


@pytest.fixture(scope="module")
def metadata():
    return json.loads(METADATA.read_text())


@pytest.fixture(scope="module")
def params(metadata):
    return {p["name"]: p for p in metadata["parameters"]}


def test_metadata_shape(metadata):
    assert metadata["name"].strip() and metadata["description"].strip()
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    for p in metadata["parameters"]:
        assert p["label"].strip() and p["helpText"].strip(), p["name"]
        assert isinstance(p["isOptional"], bool), p["name"]
        for regex in p.get("regexes", []):
            re.compile(regex)


def test_every_cli_flag_is_a_parameter_and_back(params):
    assert set(params) == set(cli_flags())


def test_only_input_is_required(params):
    assert {name for name, p in params.items() if not p["isOptional"]} == {"input"}


def test_boolean_parameters_match_the_cli_and_take_true_or_false(params):
    flags = cli_flags()
    booleans = {name for name, p in params.items() if p.get("paramType") == "BOOLEAN"}
    assert booleans == BOOLEAN_FLAGS
    for name in booleans:
        assert params[name]["regexes"] == ["^(true|false)$"]
        assert params[name]["defaultValue"] == "false"
        assert flags[name].default is False


def test_flex_style_boolean_values_are_accepted_by_the_cli(tmp_path):
    base = ["--input=gs://b/x.csv", "--connection_id=c"]
    config, _, _ = cli.parse([*base, "--dry_run=true", f"--output_dir={tmp_path}", "--verify=false",
                              "--validate_only=false", "--verify_only=false"])
    assert config.mode == "dry_run" and config.verify is False
    config, _, _ = cli.parse([*base, "--verify=true"])
    assert config.verify is True


def test_default_values_match_the_cli(params):
    flags = cli_flags()
    for name, p in params.items():
        if "defaultValue" not in p:
            continue
        default = flags[name].default
        if isinstance(default, bool):
            assert p["defaultValue"] == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(p["defaultValue"]) == default, name
        else:
            assert p["defaultValue"] == default, name
        for regex in p.get("regexes", []):
            assert re.fullmatch(regex, p["defaultValue"]), name


def test_operation_choices_match_the_cli(params):
    p = params["operation"]
    assert [o["value"] for o in p["enumOptions"]] == list(cbf.OPERATIONS)
    assert p["regexes"] == ["^(" + "|".join(cbf.OPERATIONS) + ")$"]


REGEX_EXAMPLES = {
    "input": (["gs://bucket/cbf/2024-09/*.csv", "gs://b/x.parquet"],
              ["/local/file.csv", "gs://", "gs://bucket", "s3://b/x.csv"]),
    "connection_id": (["conn-1", "A_b-9", "x" * 128], ["", "x" * 129, "a/b", "a b", "é", "../x"]),
    "api_key_secret": (["projects/p/secrets/s/versions/1", "projects/p/secrets/s/versions/latest"],
                       ["projects/p/secrets/s", FAKE_KEY, "projects/p/secrets/s/versions/1/x", ""]),
    "operation": (["sum", "replace_hourly", "replace_drop"], ["SUM", "replace", "sum ", ""]),
    "max_body_bytes": (["5000000", "1000"], ["-1", "1e6", "5,000,000", ""]),
    "max_rejected_rows": (["0", "25"], ["-1", "ten", ""]),
    "max_attempts": (["8"], ["0.5", ""]),
    "max_concurrent_streams": (["8"], ["x"]),
    "max_retry_seconds": (["600", "0.5"], ["-1", "1e3", ""]),
    "dry_run": (["true", "false"], ["True", "yes", "1", ""]),
    "verify": (["true", "false"], ["TRUE", ""]),
    "api_url": (["https://api.cloudzero.com", "https://api.example.com/base"],
                ["http://api.cloudzero.com", "ftp://x", "https://", "https://a b"]),
    "api_key_env": (["CLOUDZERO_API_KEY", "_K1"], ["1KEY", "A-B", ""]),
    "report_path": (["gs://b/reports/run.json"], ["report.json"]),
    "test_namespace": (["my-test-key"], ["has space", ""]),
}


@pytest.mark.parametrize("name", sorted(REGEX_EXAMPLES))
def test_regexes_accept_and_reject(params, name):
    good, bad = REGEX_EXAMPLES[name]
    regexes = params[name]["regexes"]
    for value in good:
        assert all(re.fullmatch(r, value) for r in regexes), (name, value)
    for value in bad:
        assert not all(re.fullmatch(r, value) for r in regexes), (name, value)


def test_regexes_agree_with_the_cli_checks(params):
    conn = params["connection_id"]["regexes"][0]
    for value in ("conn-1", "x" * 128, "x" * 129, "a/b", "", "a.b"):
        assert bool(re.fullmatch(conn, value)) == cbf.is_valid_connection_id(value), value
    secret = params["api_key_secret"]["regexes"][0]
    for value in ("projects/p/secrets/s/versions/1", "projects/p/secrets/s", "x/projects/p/secrets/s/versions/1"):
        assert bool(re.fullmatch(secret, value)) == bool(run_config.SECRET_RESOURCE.fullmatch(value)), value


def test_dockerfile():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM gcr\.io/dataflow-templates-base/python311-template-launcher-base\b", text, re.M)
    assert re.search(r"^RUN pip install .*\"?\.\[gcp\]\"?", text, re.M)
    assert re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=\S*pipeline/__main__\.py$", text, re.M)
    assert re.search(r"^ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=\S*setup\.py$", text, re.M)
    for source in ("setup.py", "anycost", "anycost_emulator", "pipeline", "transforms"):
        assert re.search(rf"^COPY {re.escape(source)} ", text, re.M), source


# ---------------------------------------------------------------------------------------------
# Airflow
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dag_tree(tmp_path_factory):
    compiled = tmp_path_factory.mktemp("dag") / "airflow_dag.pyc"
    py_compile.compile(str(DAG_FILE), cfile=str(compiled), doraise=True)
    return ast.parse(DAG_FILE.read_text())


def operator_calls(tree, name):
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name]


def keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    raise AssertionError(f"{name}= missing")


def dict_keys(node):
    assert isinstance(node, ast.Dict)
    return [k.value for k in node.keys]


def dict_value(node, key):
    return node.values[dict_keys(node).index(key)]


def test_dag_imports_the_operators_from_their_providers(dag_tree):
    imported = {(node.module, alias.name) for node in ast.walk(dag_tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert ("airflow.providers.apache.beam.operators.beam", "BeamRunPythonPipelineOperator") in imported
    assert ("airflow.providers.google.cloud.operators.dataflow", "DataflowStartFlexTemplateOperator") in imported


def test_dag_beam_operator_runs_the_pipeline_on_dataflow(dag_tree, params):
    (call,) = operator_calls(dag_tree, "BeamRunPythonPipelineOperator")
    runner = keyword(call, "runner")
    assert isinstance(runner, ast.Constant) and runner.value == "DataflowRunner"
    assert ast.unparse(keyword(call, "py_file")).rstrip("'\"").endswith("/pipeline/__main__.py")
    options = keyword(call, "pipeline_options")
    keys = dict_keys(options)
    assert {"input", "connection_id", "api_key_secret", "labels", "setup_file"} <= set(keys)
    assert isinstance(dict_value(options, "labels"), (ast.Dict, ast.Name))
    keyword(call, "dataflow_config")
    # Every option that is not one of ours must be left for Beam, and none may carry a key.
    assert not {k for k in keys if "key" in k} - {"api_key_secret"}


def test_dag_flex_template_operator_uses_the_template_parameters(dag_tree, params):
    (call,) = operator_calls(dag_tree, "DataflowStartFlexTemplateOperator")
    launch = dict_value(keyword(call, "body"), "launchParameter")
    assert "containerSpecGcsPath" in dict_keys(launch)
    parameters = dict_keys(dict_value(launch, "parameters"))
    assert {"input", "connection_id", "api_key_secret"} <= set(parameters)
    assert set(parameters) <= set(params), "every parameter must be in metadata.json"
    keyword(call, "location")


@pytest.fixture(scope="module")
def local_dag_tree(tmp_path_factory):
    compiled = tmp_path_factory.mktemp("dag") / "airflow_local_dag.pyc"
    py_compile.compile(str(LOCAL_DAG_FILE), cfile=str(compiled), doraise=True)
    return ast.parse(LOCAL_DAG_FILE.read_text())


def test_local_dag_runs_the_pipeline_with_the_project_python_and_checks_the_report(local_dag_tree):
    (call,) = operator_calls(local_dag_tree, "BeamRunPythonPipelineOperator")
    assert keyword(call, "runner").value == "DirectRunner"
    assert "py_requirements" not in [kw.arg for kw in call.keywords]  # no virtualenv per run
    assert ast.unparse(keyword(call, "py_interpreter")) == "PYTHON"
    assert "REPO / '.venv' / 'bin' / 'python'" in ast.unparse(next(node for node in local_dag_tree.body if isinstance(node, ast.Assign)
                                         and node.targets[0].id == "PYTHON"))
    options = keyword(call, "pipeline_options")
    assert {"input", "stream_column", "api_url", "report_path", "dead_letter_path", "labels"} <= set(dict_keys(options))
    assert not [k for k in dict_keys(options) if "key" in k]
    # the check runs even when the upload failed, so its log says why the DAG run failed
    (check,) = [node for node in local_dag_tree.body if isinstance(node, ast.FunctionDef) and node.name == "check_report"]
    (decorator,) = check.decorator_list
    assert ast.unparse(decorator) == "task(trigger_rule='all_done')"
    assert "report.get('ok') is not True" in ast.unparse(check)


def test_ci_runs_the_airflow_check_between_the_suite_and_the_local_run():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("./")]
    assert lines == ["./run_tests.sh", "./scripts/dataflow_check.sh", "./scripts/airflow_check.sh", "./run_local.sh"]
    text = AIRFLOW_CHECK.read_text()
    assert os.access(AIRFLOW_CHECK, os.X_OK) and "set -euo pipefail" in text
    for pinned in ("apache-airflow==3.", "apache-airflow-providers-apache-beam==", "apache-airflow-providers-google=="):
        assert pinned in text, pinned
    assert ".venv-airflow" in (REPO / ".gitignore").read_text()


def test_the_dataflow_check_runs_its_own_tests_in_its_own_virtualenv():
    """tests_dataflow/ needs the gcp extra; the main suite must not: neither collects the other."""
    check = REPO / "scripts" / "dataflow_check.sh"
    text = check.read_text()
    assert os.access(check, os.X_OK) and "set -euo pipefail" in text
    assert '-e ".[gcp,test]"' in text and "tests_dataflow" in text
    assert ".venv-gcp/" in (REPO / ".gitignore").read_text().splitlines()
    assert (REPO / "run_tests.sh").read_text().rstrip().endswith(" tests")
    for path in (REPO / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(("google", "apache_beam.runners.dataflow",
                                                            "tests_dataflow"))], (path.name, names)


# ---------------------------------------------------------------------------------------------
# Airflow's extra flags, end to end on the DirectRunner (dry run: no key, no network)
# ---------------------------------------------------------------------------------------------

def test_airflow_style_flags_work_end_to_end_on_the_direct_runner(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("time/usage_start,cost/cost,resource/service\n"
                      "2024-09-01T00:00:00Z,1.50,Compute\n"
                      "2024-09-02T00:00:00Z,2.25,Storage\n")
    report = tmp_path / "report.json"
    out = tmp_path / "bodies"
    # py_file style, exactly how BeamRunPythonPipelineOperator calls it: python FILE --flags
    cmd = [sys.executable, str(REPO / "pipeline" / "__main__.py"), "--runner=DirectRunner",
           f"--input={source}", "--connection_id=conn-1", "--dry_run", f"--output_dir={out}",
           f"--report_path={report}", f"--dead_letter_path={tmp_path / 'rejected'}",
           "--labels=app=cloudzero-anycost", "--labels=airflow-version=v2-10-5",
           "--job_name=cloudzero-anycost-1a2b3c4d"]
    env = {k: v for k, v in os.environ.items() if k not in ("CLOUDZERO_API_KEY", "FLEX_TEMPLATE_PYTHON_PY_FILE")}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["rows_read"] == 2 and data["rows_rejected"] == 0
    bodies = sorted(out.rglob("*.json"))
    assert len(bodies) == 1 and bodies[0].parent.name == "2024-09"
    assert len(json.loads(bodies[0].read_text())["data"]) == 2


# ---------------------------------------------------------------------------------------------
# The wheel Dataflow workers install
# ---------------------------------------------------------------------------------------------

def _offline_build_possible():
    try:
        import setuptools
        version = tuple(int(part) for part in setuptools.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return False
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def test_wheel_holds_both_packages_and_no_tests(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy2(REPO / "setup.py", source / "setup.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("anycost", "anycost_emulator", "pipeline", "transforms", "tests"):  # tests/ too: it must stay out
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)]
    # No build isolation: the build must not fetch setuptools from a package index.
    assert _offline_build_possible(), "install the test extra (it brings wheel) first"
    cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("pipeline/__main__.py", "anycost/inputs/normalise.py", "transforms/sink.py", "anycost_emulator/__main__.py"):
        assert required in names
    for package in ("anycost", "anycost_emulator", "pipeline", "transforms"):
        for module in (REPO / package).glob("*.py"):
            assert f"{package}/{module.name}" in names
    assert not [name for name in names if name.startswith("tests/") or "/tests/" in name]
    metadata_name = next(name for name in names if name.endswith(".dist-info/METADATA"))
    metadata_text = zipfile.ZipFile(wheel).read(metadata_name).decode()
    assert re.search(r"Requires-Dist: google-cloud-secret-manager.*extra == .gcp.", metadata_text)


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------

class NotFound(Exception):
    pass


class FakeSecretClient:
    """Google's SecretManagerServiceClient, as far as api_key uses it."""

    def __init__(self, secrets):
        self.secrets = secrets
        self.requests = []

    def access_secret_version(self, request):
        name = request["name"]
        self.requests.append(name)
        if name not in self.secrets:
            raise NotFound(f"404 Secret Version [{name}] not found or has no versions.")
        return types.SimpleNamespace(payload=types.SimpleNamespace(data=self.secrets[name]))


@pytest.fixture
def fake_secrets(monkeypatch):
    client = FakeSecretClient({SECRET: (FAKE_KEY + "\n").encode(),
                               "projects/p/secrets/empty/versions/1": b"  \n"})
    monkeypatch.setattr(api_key, "secret_client_factory", lambda: client)
    return client


def test_key_from_secret_manager_is_masked_and_unpicklable(fake_secrets):
    key = api_key.load(api_key_secret=SECRET)
    assert key.reveal() == FAKE_KEY
    assert fake_secrets.requests == [SECRET]
    assert FAKE_KEY not in repr(key) and FAKE_KEY not in str(key) and FAKE_KEY not in f"{key}"
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [key]})


def test_secret_takes_precedence_only_when_named(fake_secrets, monkeypatch):
    monkeypatch.setenv("MY_KEY_VAR", "env-key-value")
    assert api_key.load(api_key_env="MY_KEY_VAR").reveal() == "env-key-value"
    assert fake_secrets.requests == []


@pytest.mark.parametrize("resource, expected", [
    ("projects/p/secrets/missing/versions/1", "could not read"),
    ("projects/p/secrets/empty/versions/1", "is empty"),
    ("projects/p/secrets/s", "must look like"),
    (FAKE_KEY, "must look like"),
])
def test_missing_or_empty_secret_raises_without_the_value(fake_secrets, resource, expected):
    with pytest.raises(api_key.ApiKeyError) as info:
        api_key.load(api_key_secret=resource)
    message = str(info.value)
    assert expected in message
    assert FAKE_KEY not in message
    assert "\n" not in message


def test_missing_secret_manager_library_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)  # makes the import fail
    monkeypatch.setattr(api_key, "secret_client_factory", api_key.default_secret_client)
    with pytest.raises(api_key.ApiKeyError, match=r"pip install \.\[gcp\]"):
        api_key.load(api_key_secret=SECRET)


def test_api_key_env_and_api_key_secret_are_mutually_exclusive():
    cmd = [sys.executable, "-m", "pipeline", "--input", "gs://b/x.csv", "--connection_id", "c",
           "--api_key_env", "MY_KEY", "--api_key_secret", SECRET]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CLOUDZERO_API_KEY": FAKE_KEY})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and "--api_key_secret" in lines[-1] and "--api_key_env" in lines[-1]
    assert FAKE_KEY not in result.stdout + result.stderr
    with pytest.raises(cli.UsageError):
        cli.parse(["--input", "x", "--connection_id", "c", "--api_key_env", "K", "--api_key_secret", SECRET])
