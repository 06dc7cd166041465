"""`python -m pipeline`: parse the flags, check the input, run the Beam job, print the report.

Exit status: 0 when every body was accepted and rejected rows are within the limit;
1 when the run finished with failures; 2 for a usage error (one line saying why);
3 when the input cannot be planned (no file matches, unknown column, unreadable file);
130 when Ctrl-C stopped a local run (the report is written; a rerun sends the rest).
Beam's own pipeline options go to Beam's PipelineOptions untouched, so it works as the
`py_file` of Airflow's BeamRunPythonPipelineOperator; a flag neither knows is refused.
"""
import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
from urllib.parse import urlsplit

from anycost.delivery import api_key, stopping
from anycost import cbf
from anycost import config as run_config, version, words
from anycost.inputs import files, sources
from anycost.outcomes import report as run_report
from pipeline import flags

LOG = logging.getLogger("cloudzero")
USAGE_ERROR, INPUT_ERROR = 2, 3
STOPPED = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)
LOCAL_RUNNERS = {None, "DirectRunner", "direct", "FnApiRunner", "SwitchingDirectRunner"}


class UsageError(Exception):
    pass


class JobFailed(Exception):
    """The Beam job itself failed or left no report; the message is one line for a person."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _positive_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, not {text}")
    return value


def _flag(text):
    """A switch that also takes `=true`/`=false`, as Flex Template launchers pass them."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _delimiter(text):
    value = {"tab": "\t", "\\t": "\t"}.get(text.lower(), text)
    if len(value) != 1 or value in "\"\r\n":
        raise argparse.ArgumentTypeError(f"must be one character (or 'tab'), not {text!r}")
    return value


def _currency(text):
    if not (len(text) == 3 and text.isascii() and text.isalpha()):
        raise argparse.ArgumentTypeError(f"must be a three-letter ISO 4217 code such as USD, not {text!r}")
    return text.upper()


def build_parser():
    parser = _Parser(prog="python -m pipeline", description=(
        "Upload Common Bill Format files (CSV, CSV.gz, Parquet) to CloudZero AnyCost Stream.\n\n"
        "Apache Beam's pipeline options (--runner, --direct_num_workers, --project, --labels, ...)\n"
        "are passed to Beam; any other flag is refused. Every flag works as --flag value and\n"
        "--flag=value, and with hyphens: --dry-run, --report-path FILE."), allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=flags.EPILOG)
    add = parser.add_argument
    add("--version", action="version", version=f"%(prog)s {version.VERSION}")
    add("--input", action="append", required=True, metavar="PATTERN",
        help="glob over any Beam filesystem (local, gs://); repeat for more")
    stream = parser.add_mutually_exclusive_group(required=True)
    stream.add_argument("--connection_id", help="the AnyCost Stream connection every row goes to")
    stream.add_argument("--stream_column", help="a column naming each row's connection id (removed from rows)")
    add("--api_url", default="https://api.cloudzero.com")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api_key_env", default=None,
                     help="name of the environment variable holding the key (default CLOUDZERO_API_KEY)")
    key.add_argument("--api_key_secret", default=None,
                     help="Secret Manager version projects/P/secrets/S/versions/V (pip install .[gcp])")
    add("--operation", choices=cbf.OPERATIONS, default="sum")
    add("--max_body_bytes", type=int, default=cbf.MAX_BODY_BYTES)
    add("--dead_letter_path", help="prefix of the JSON Lines files for rejected rows")
    add("--max_rejected_rows", type=_positive_int, default=0)
    add("--dry_run", type=_flag, nargs="?", const=True, default=False, metavar="true|false", help="write bodies to --output_dir instead of posting")
    add("--output_dir")
    add("--report_path", help="where to write the JSON run report")
    add("--validate_only", type=_flag, nargs="?", const=True, default=False, metavar="true|false", help="send bodies to the validate endpoint only")
    add("--verify", type=_flag, nargs="?", const=True, default=False, metavar="true|false", help="read each touched month back after the upload")
    add("--verify_only", type=_flag, nargs="?", const=True, default=False, metavar="true|false", help="read the months back without uploading")
    add("--test_namespace", metavar="KEY", help="send cloudzero-test-key: KEY on every request")
    add("--state_path", help="record delivered bodies here (local or gs://) so a rerun resumes")
    add("--max_attempts", type=int, default=8)
    add("--max_retry_seconds", type=float, default=90.0)
    add("--connect_timeout", type=float, default=10.0)
    add("--read_timeout", type=float, default=30.0)
    add("--lease_wait_seconds", type=float, default=900.0)
    add("--skip_month_check", type=_flag, nargs="?", const=True, default=False, metavar="true|false",
        help="with sum, do not read what CloudZero holds to check the monthly row limit first")
    add("--max_concurrent_streams", type=int, default=8)
    add("--input_format", choices=sources.INPUT_FORMATS, default=sources.CBF,
        help="cbf (default) or focus: FOCUS 1.0-1.2 exports, mapped to CBF (see docs/data-rules.md)")
    add("--column_map", metavar="FILE", help='JSON object {"source column": "CBF column"}, applied before validation')
    add("--unknown_columns", choices=sources.UNKNOWN_COLUMNS, default="refuse",
        help="a column that is not CBF stops the run (refuse, default) or is left out (drop)")
    add("--tag_keys", choices=sources.TAG_KEYS, default=None,
        help="a tag key CloudZero does not allow stops the run (refuse) or has each bad character "
             "replaced by '_' (sanitize); default refuse for cbf, sanitize for focus")
    add("--csv_delimiter", type=_delimiter, default=",", metavar="CHAR", help="default ','; 'tab' for a tab")
    add("--currency", type=_currency, default="USD", help="FOCUS rows in another BillingCurrency are rejected")
    add("--wait", dest="wait", action=argparse.BooleanOptionalAction, default=None,
        help="wait for the job and print its report (default: yes, except as a Flex Template)")
    # --watch: the command line as a streaming job over arriving files (pipeline/watch.py)
    add("--watch", type=_flag, nargs="?", const=True, default=False, metavar="true|false",
        help="keep polling --input and upload each new file once, as a streaming job")
    add("--poll_interval", type=float, default=None, metavar="SECONDS",
        help="with --watch: seconds between two looks at the patterns (default 60)")
    add("--watch_timeout", type=float, default=None, metavar="SECONDS",
        help="with --watch: end the job after this many seconds and print the report (default: run until cancelled)")
    flags.describe(parser)
    return parser


def parse(argv):
    """Our flags as a RunConfig, plus the flags for Beam; raises UsageError with one line."""
    parser = build_parser()
    ours = flags.option_names(parser)
    argv = flags.with_underscores(argv, ours)
    try:
        args, beam_args = parser.parse_known_args(argv)
    except UsageError:
        misspelt = flags.first_unknown_flag(argv, ours)
        if misspelt:
            raise UsageError(misspelt) from None
        raise
    for flag in beam_args:
        if flag.split("=", 1)[0].lstrip("-").lower().replace("-", "_") in ("api_key", "apikey", "key"):
            raise UsageError("the API key is never a flag: put it in the variable --api_key_env names, "
                             "or in Secret Manager (--api_key_secret)")
    try:
        flags.refuse_unknown(beam_args, ours)
    except flags.FlagError as err:
        raise UsageError(str(err)) from None
    modes = [name for name in ("dry_run", "validate_only", "verify_only") if getattr(args, name)]
    if len(modes) > 1:
        raise UsageError(f"--{modes[0]} and --{modes[1]} cannot be used together")
    if args.output_dir and not args.dry_run:
        raise UsageError("--output_dir goes with --dry_run (without it the bodies are sent, "
                         "not written); add --dry_run, or leave --output_dir out to upload")
    if args.verify and modes:
        raise UsageError(f"--verify goes with an upload, not with --{modes[0]}")
    if not args.watch and (args.poll_interval is not None or args.watch_timeout is not None):
        raise UsageError("--poll_interval and --watch_timeout go with --watch")
    if args.watch and (args.verify or args.verify_only):
        raise UsageError("--verify reads whole months back, which a watch never finishes; "
                         "run it without --watch once the files are in")
    for flag in ("poll_interval", "watch_timeout"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            raise UsageError(f"--{flag} must be a number of seconds above 0")
    config = run_config.RunConfig(
        inputs=tuple(args.input), connection_id=args.connection_id, stream_column=args.stream_column,
        api_url=args.api_url, api_key_env=args.api_key_env or "CLOUDZERO_API_KEY",
        api_key_secret=args.api_key_secret, operation=args.operation, max_body_bytes=args.max_body_bytes,
        dead_letter_path=args.dead_letter_path, max_rejected_rows=args.max_rejected_rows,
        mode=modes[0] if modes else run_config.SEND, output_dir=args.output_dir,
        report_path=args.report_path, verify=args.verify, test_namespace=args.test_namespace,
        state_path=args.state_path, max_attempts=args.max_attempts,
        max_retry_seconds=args.max_retry_seconds, connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout, lease_wait_seconds=args.lease_wait_seconds,
        max_concurrent_streams=args.max_concurrent_streams,
        skip_month_check=args.skip_month_check,
        input_format=args.input_format, column_map_file=args.column_map, unknown_columns=args.unknown_columns,
        tag_keys=args.tag_keys or ("sanitize" if args.input_format == sources.FOCUS else "refuse"),
        csv_delimiter=args.csv_delimiter, currency=args.currency,
        watch=args.watch, poll_interval=args.poll_interval or 60.0, watch_timeout=args.watch_timeout)
    problem = config.problem()  # the same checks as WriteToAnyCost's, naming --flags
    if problem:
        raise UsageError(problem)
    return config, beam_args, args.wait


def _pipeline_options(beam_args):
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = False
    return options, options.view_as(StandardOptions).runner


def _runner(name):
    """The DirectRunner means Beam's in-process FnApiRunner here: no Prism download attempt."""
    if name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
    return name


def _run_id():
    """Sorts by start time; the suffix keeps two runs started in the same second apart."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def _locations(config, options, local):
    """Where the dead letter and the report go when the flags do not say: one folder per run,
    ./cloudzero-runs/<run id>/ on a local run, <temp_location>/<run id>/ elsewhere."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    temp = options.view_as(GoogleCloudOptions).temp_location
    base = os.path.abspath("cloudzero-runs") if local else temp
    if not base:
        raise UsageError("give --dead_letter_path and --report_path, or --temp_location, on this runner")
    run_folder = FileSystems.join(base, _run_id())
    dead_letter = config.dead_letter_path or FileSystems.join(run_folder, "rejected")
    report_target = config.report_path or FileSystems.join(run_folder, "report.json")
    return dead_letter, report_target, run_folder


def _with_ledger(config, options, local):
    """The run with a delivery ledger. Without --state_path it is
    ./cloudzero-runs/state/<API> on a local run and <temp_location>/cloudzero-state/<API>
    elsewhere: one place that every run from here to that API shares, so that a rerun
    resumes, and so that a body may move to a new idempotency key after a cached error
    without any risk of being applied twice (see anycost.delivery). <API> is the host (and
    port, and test namespace): a delivery to one endpoint says nothing about another."""
    if config.state_path or config.mode != run_config.SEND:
        return config
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    temp = options.view_as(GoogleCloudOptions).temp_location
    base = os.path.abspath(os.path.join("cloudzero-runs", "state")) if local else (
        FileSystems.join(temp, "cloudzero-state") if temp else None)
    if not base:
        return config
    return dataclasses.replace(config, state_path=FileSystems.join(base, ledger_scope(config)))


def ledger_scope(config):
    """A folder name for the API a run delivers to: `api.cloudzero.com`, `127.0.0.1_8080`,
    `api.cloudzero.com+<test namespace>`."""
    parts = urlsplit(config.api_url)
    scope = parts.hostname + (f"_{parts.port}" if parts.port else "")
    if config.test_namespace:
        scope += "+" + config.test_namespace
    return re.sub(r"[^A-Za-z0-9._+-]", "_", scope)


def _log_labels(options):
    """Orchestrators label jobs (Airflow adds airflow-version): show what reached the pipeline."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    labels = options.view_as(GoogleCloudOptions).labels
    if labels:
        LOG.info("labels: %s", ", ".join(labels))


def _remove_if_empty(run_folder):
    """A local run leaves its folder (and ./cloudzero-runs) behind only when something is in it."""
    for folder in (run_folder, os.path.dirname(run_folder)):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or never made
            return


def _shown(folder):
    """The default run folder as a person finds it: relative when under the current folder."""
    if "://" in folder:
        return folder
    relative = os.path.relpath(folder)
    return folder if relative.startswith("..") else os.path.join(".", relative)


def _where_outputs_are(report, report_target, run_folder, config):
    """The run's last line: where to look (for a dry run, first where the bodies are)."""
    line = ""
    if config.mode == run_config.DRY_RUN:
        line = f"dry run, nothing sent: the bodies are in {_shown(config.output_dir.rstrip('/'))}/ " \
               "(<connection>/<month>/<seq>.json); "
    written = [report_target, *report["dead_letter_files"]]
    if all(path.startswith(run_folder + "/") for path in written):
        names = ", ".join(path[len(run_folder) + 1:] for path in written)
        return line + f"outputs: {_shown(run_folder)}/ ({names})"
    line += f"report: {report_target}"
    if report["dead_letter_files"]:
        line += "; rejected rows: " + ", ".join(report["dead_letter_files"])
    return line


def run(argv=None):
    import apache_beam as beam
    from pipeline import graph, rejects
    from transforms import chunk_files as chunk_folders

    config, beam_args, wait = parse(sys.argv[1:] if argv is None else argv)
    options, runner_name = _pipeline_options(beam_args)
    if runner_name is None and os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE"):
        runner_name = "DataflowRunner"  # launched as a Flex Template: never the local runner
    local = runner_name in LOCAL_RUNNERS
    if wait is None:
        wait = not os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE")
    if local and config.needs_api_key and not config.api_key_secret:
        api_key.from_env(config.api_key_env)  # fail fast, before reading anything
    if config.column_map_file:
        config = dataclasses.replace(config, column_map=files.load_column_map(config.column_map_file))
    if config.watch:  # files come later: nothing to plan up front
        return _run_watch(config, options, runner_name, local, wait)
    planned = files.plan(config.inputs, config.normalise_settings())
    splits = planned.splits
    config = dataclasses.replace(config, dropped_columns=planned.dropped_columns, input_warnings=planned.warnings)
    dead_letter, report_target, run_folder = _locations(config, options, local)
    state_path_given = bool(config.state_path)
    config = _with_ledger(config, options, local)
    _log_labels(options)
    LOG.info("reading %d file(s) matched by %d pattern(s); report: %s; rejected rows: %s*; ledger: %s",
             len({split.path for split in splits}), len(config.inputs), report_target, dead_letter,
             config.state_path or "none")

    p = beam.Pipeline(runner=_runner(runner_name), options=options)
    graph.build(p, config, splits, dead_letter, report_target, log_report=not (local and wait))
    with _stop_on_ctrl_c(local and wait):
        try:
            return _run_and_report(p, config, wait, local, report_target, run_folder, state_path_given)
        finally:
            if wait:  # a job that ended or failed: its temporary chunk and part files serve no rerun
                chunk_folders._remove_left_over(p)
                rejects.remove_left_over(p)


def _run_and_report(p, config, wait, local, report_target, run_folder, state_path_given):
    from apache_beam.io.filesystems import FileSystems
    try:
        result = p.run()
        if not wait:
            LOG.info("job submitted; the report will be written to %s", report_target)
            return 0
        state = result.wait_until_finish()
        with FileSystems.open(report_target) as handle:
            report = json.loads(handle.read())
    except Exception as err:  # the job itself broke: say so in one line, keep the detail in the log
        if local:
            _remove_if_empty(run_folder)
        LOG.debug("the Beam job failed", exc_info=True)
        raise JobFailed(f"the Beam job did not finish ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}); "
                        "set CLOUDZERO_LOG_LEVEL=DEBUG for the full traceback. With --state_path, "
                        "a rerun resumes where it stopped") from None
    LOG.debug("job state: %s", state)
    if local:
        _remove_if_empty(run_folder)
    print(run_report.render(report), flush=True)
    print(_where_outputs_are(report, report_target, run_folder, config), flush=True)
    if stopping.requested():
        print(_how_to_resume(report, config.state_path, state_path_given), file=sys.stderr, flush=True)
        return STOPPED
    return run_report.exit_code(report)


@contextlib.contextmanager
def _stop_on_ctrl_c(enabled):
    """On a local run, the first Ctrl-C asks the senders to stop after the request in flight,
    so the job ends with its report; a second one ends the process at once (the ledger's
    write-ahead records keep a rerun from sending anything twice)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_ctrl_c(_signum, _frame):
        if stopping.requested():
            print("\nstopped at once: the report was not written. Rerun the same command with the same "
                  "--state_path to send the rest; nothing is sent twice", file=sys.stderr, flush=True)
            os._exit(STOPPED)
        stopping.request()
        print("\nCtrl-C: stopping after the request in flight, then writing the report "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    stopping.clear()
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        stopping.clear()  # the stop was this run's; a later one in this process starts afresh


def _how_to_resume(report, state_path, state_path_given):
    """The last line of a run stopped by Ctrl-C: what was left, and the command that sends it."""
    left = report["bodies_not_sent"] + report["bodies_failed"]
    line = (f"stopped by the user (Ctrl-C): {words.plural(left, 'body', 'bodies')} not sent. "
            "To send the rest, run the same command again")
    if not state_path:
        return line
    where = (f"with the same --state_path ({state_path})" if state_path_given
             else f"from the same folder, so that it uses the same ledger ({state_path})")
    return f"{line} {where}: bodies it records as delivered are skipped, so nothing is sent twice"


def _run_watch(config, options, runner_name, local, wait):
    """--watch: a streaming job; the report is built from its records when it ends."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from pipeline import watch
    from transforms import chunk_files as chunk_folders

    options.view_as(StandardOptions).streaming = True
    dead_letter, report_target, run_folder = _locations(config, options, local)
    config = _with_ledger(config, options, local)
    results_dir = watch.results_dir_for(report_target, _run_id())
    LOG.info("watching %d pattern(s) every %g s%s; report: %s", len(config.inputs), config.poll_interval,
             f" for {config.watch_timeout:g} s" if config.watch_timeout else " until cancelled", report_target)
    p = beam.Pipeline(runner=_runner(runner_name), options=options)
    watch.build(p, config, dead_letter, results_dir)
    try:
        result = p.run()
        if not wait:
            LOG.info("job submitted; each file's outcome is written under %s", results_dir)
            return 0
        result.wait_until_finish()
    except KeyboardInterrupt:  # a local watch without --watch_timeout ends here
        LOG.info("interrupted: the report covers the files handled so far")
    except Exception as err:  # the job itself broke: one line, the detail in the log
        LOG.debug("the Beam job failed", exc_info=True)
        raise JobFailed(f"the watch job did not finish ({type(err).__name__}: {str(err).strip()[:300]}); "
                        "with --state_path, a restarted watcher sends nothing twice") from None
    finally:
        if wait:  # files not yet sent are read again by a restarted watcher, not from here
            chunk_folders._remove_left_over(p)
    report, text = watch.finish(config, results_dir, report_target)
    print(text, flush=True)
    print(_where_outputs_are(report, report_target, run_folder, config), flush=True)
    return run_report.exit_code(report)


def main(argv=None):
    logging.basicConfig(level=os.environ.get("CLOUDZERO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("apache_beam.io.filebasedsink").setLevel(logging.ERROR)  # "no shards" when no rejects
    # A failed job is reported in one line (JobFailed); the runner's traceback only when debugging.
    logging.getLogger("apache_beam.runners").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    # Airflow's Beam operator finds the Dataflow job by this logger's "Created job with id" line.
    logging.getLogger("apache_beam.runners.dataflow.internal.apiclient").setLevel(logging.INFO)
    try:
        return run(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except api_key.ApiKeyError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except JobFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except files.InputProblems as err:
        print("error: the input cannot be uploaded; nothing was read or sent:", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return INPUT_ERROR
