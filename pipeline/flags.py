"""The command line's flags as a person meets them: --help with every default, the exit
statuses and an example; the hyphen form of every connector flag; and a refusal, naming the
closest flag, for anything neither the connector nor Beam knows.

Beam's option names are not listed here: they come from a parser built the way Beam builds
its own, so new Beam options pass without a change here.
"""
import difflib


class FlagError(Exception):
    """A flag nobody knows, or a value Beam's parser refuses; the message is one line."""


EPILOG = """\
exit status:
  0  every body was accepted and rejected rows are within --max_rejected_rows
  1  the run finished with failures (see the table and the report)
  2  usage error: a flag is unknown, missing or wrong (one line says why)
  3  the input cannot be planned (no file matches, unknown column, unreadable file);
     nothing was read or sent
  130  stopped by Ctrl-C: the report is written, and the same command sends the rest

outputs: without --report_path / --dead_letter_path, the report and the rejected rows go to
  ./cloudzero-runs/<run id>/ on a local run (under --temp_location on Dataflow); the last
  line of the run names the folder. Without --state_path, the delivery ledger that lets a
  rerun resume is ./cloudzero-runs/state/<API host_port> (<temp_location>/cloudzero-state/...
  on Dataflow): rerun from the same folder, or give the same --state_path.

example:
  CLOUDZERO_API_KEY=... python -m pipeline --input 'exports/2024-09/*.csv' \\
      --connection_id my-connection --state_path state/ --max-rejected-rows 10
"""

# Help for flags whose add() line has none, and what "no default" means for the others.
HELP = {
    "api_url": "the AnyCost Stream API",
    "operation": "what CloudZero does with each month's rows",
    "max_body_bytes": "largest request body, in bytes",
    "max_rejected_rows": "rows that may be rejected while the good rows are still sent",
    "output_dir": "where --dry_run writes the bodies: DIR/<connection>/<month>/<seq>.json",
    "max_attempts": "attempts per request before giving up",
    "max_retry_seconds": "time a request may spend retrying",
    "connect_timeout": "seconds to open a connection",
    "read_timeout": "seconds to wait for an answer",
    "lease_wait_seconds": "seconds to wait for another run sending the same connection (same --state_path)",
    "max_concurrent_streams": "connections sent in parallel (each one strictly one request at a time)",
}
METAVAR = {int: "N", float: "SECONDS", "connection_id": "ID", "stream_column": "COLUMN",
           "api_url": "URL", "api_key_env": "NAME", "api_key_secret": "RESOURCE", "max_rejected_rows": "N"}
DEFAULT_TEXT = {
    "dead_letter_path": "./cloudzero-runs/<run id>/rejected",
    "report_path": "./cloudzero-runs/<run id>/report.json",
    "state_path": "./cloudzero-runs/state/<API host_port>",
}


def describe(parser):
    """Fill in missing help and show every default in --help."""
    for action in parser._actions:  # pylint: disable=protected-access
        if not action.option_strings or action.dest in ("help", "wait", "version"):
            continue
        text = action.help or HELP.get(action.dest, "")
        default = action.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif default is None:
            default = DEFAULT_TEXT.get(action.dest)
        if default is not None and "default" not in text:
            text += f" (default: {default})"
        action.help = text.replace("%", "%%").strip()
        if action.metavar is None:
            action.metavar = METAVAR.get(action.type) or METAVAR.get(action.dest) or (
                "PATH" if action.dest.endswith(("_path", "_dir")) else None)


def _beam_parser():
    """A parser of every option Beam knows, built the way Beam builds it: from every registered
    PipelineOptions subclass (see PipelineOptions.get_all_options)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _Refusing(_BeamArgumentParser):
        def error(self, message):
            raise FlagError(message)

    parser = _Refusing(allow_abbrev=False)
    registered = {}
    for cls in PipelineOptions.__subclasses__():
        registered.setdefault(str(cls), cls)
    for cls in registered.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def option_names(parser):
    return [option for action in parser._actions  # pylint: disable=protected-access
            for option in action.option_strings if option.startswith("--")]


def with_underscores(argv, ours):
    """`--dry-run[=x]` is `--dry_run[=x]`: every connector flag also works with hyphens."""
    fixed = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = "--" + name[2:].replace("-", "_")
        if name.startswith("--") and name not in ours and underscored in ours:
            arg = underscored + sep + value
        fixed.append(arg)
    return fixed


# Portable runners learn more options from their job server: Beam only warns about those.
JOB_SERVER_RUNNERS = {"PortableRunner", "FlinkRunner", "SparkRunner", "PrismRunner"}


def refuse_unknown(beam_args, ours):
    """Stop on a flag that neither the connector nor Beam knows, suggesting the closest name,
    and on a --runner Beam would not know."""
    parser = _beam_parser()
    known, unknown = parser.parse_known_args(beam_args)
    problem = runner_problem(known.runner)
    if problem:
        raise FlagError(problem)
    if known.runner in JOB_SERVER_RUNNERS or not unknown:
        return
    first = unknown[0]
    if not first.startswith("-"):
        raise FlagError(f"unexpected argument {first!r}: each --input takes one pattern; quote a "
                         "glob (--input 'data/*.csv') or repeat --input")
    raise FlagError(_unknown_flag(first.partition("=")[0], set(ours) | set(option_names(parser))))


def first_unknown_flag(argv, ours):
    """The refusal of the first flag in `argv` that neither the connector nor Beam knows, or
    None: asked when our own parser stops first (a misspelt --connection_id leaves the
    required one missing), so the message names the misspelling instead."""
    names = set(ours) | set(option_names(_beam_parser()))
    for arg in argv:
        name = arg.partition("=")[0]
        if name.startswith("--") and name not in names:
            return _unknown_flag(name, names)
    return None


def _unknown_flag(name, names):
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (f"unknown flag {name}{hint} (python -m pipeline --help lists the connector's "
            "flags; Beam's pipeline options are accepted too)")


def runner_problem(runner):
    """Why Beam would not know `runner`, naming the closest runner, or None. Beam looks a name
    up without regard to case and with or without "Runner"; a dotted name is a class it imports."""
    from apache_beam.options.pipeline_options import StandardOptions
    if runner is None or "." in runner:
        return None
    known = StandardOptions.KNOWN_RUNNER_NAMES
    if {runner.lower(), runner.lower() + "runner"} & {name.lower() for name in known}:
        return None
    close = difflib.get_close_matches(runner, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (f"--runner {runner} is not a Beam runner{hint} (known: {', '.join(known)}, "
            "or the dotted name of a PipelineRunner class)")
