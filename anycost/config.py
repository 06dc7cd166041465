"""The run's settings as picklable values: everything the workers need, never the key.

`WriteSettings` is what the write path needs, built from `WriteToAnyCost`'s parameters (or
the command line's flags, see `RunConfig.write_settings`). `RunConfig` is the command line's
whole run: the write settings plus inputs, output locations and the report.
"""
import dataclasses
import ipaddress
import re
from typing import Optional, Tuple
from urllib.parse import urlsplit

from anycost import cbf

SEND, DRY_RUN, VALIDATE_ONLY, VERIFY_ONLY = "send", "dry_run", "validate_only", "verify_only"
MODES = (SEND, DRY_RUN, VALIDATE_ONLY, VERIFY_ONLY)
INPUT_FORMATS = ("cbf", "focus")
MIN_BODY_BYTES = 1000  # below this a body holds hardly a row: a typo, not a setting


SECRET_RESOURCE = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")

# The faces a message can name a setting in: the Beam API (`WriteToAnyCost(max_attempts=8)`)
# or the command line (`--max_attempts 8`). Every message naming a setting asks these two.
API, CLI = "api", "cli"
FACES = (API, CLI)


def setting_name(name, face):
    """How the reader of `face` calls setting `name`: `max_attempts` or `--max_attempts`."""
    return f"--{name}" if face == CLI else name


def setting_value(name, value, face):
    """A setting with its value as the reader of `face` writes it: `max_attempts=8` or
    `--max_attempts 8`; `value` is the text to show."""
    return f"--{name} {value}" if face == CLI else f"{name}={value}"


def setting_on(name, face):
    """A switch turned on as the reader of `face` writes it: `skip_month_check=True` or `--skip_month_check`."""
    return f"--{name}" if face == CLI else f"{name}=True"


def url_problem(api_url, face=CLI):
    """Why `api_url` is refused, or None: https is required unless the host is loopback."""
    name = setting_name("api_url", face)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} {api_url!r} is not an http(s) URL"
    if parts.scheme == "https" or is_loopback(parts.hostname):
        return None
    return f"{name} must use https:// (plain http is allowed only for a loopback host), not {api_url!r}"


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class RowSettings:
    """How rows are read and normalised: where they go, and how source files become CBF (never the API key)."""
    connection_id: Optional[str] = None
    stream_column: Optional[str] = None
    operation: str = "sum"
    max_body_bytes: int = cbf.MAX_BODY_BYTES
    # How source files become CBF columns (see anycost.inputs.sources): applied before this module.
    input_format: str = "cbf"  # or "focus"
    column_map: tuple = ()  # ((source column, target column), ...)
    unknown_columns: str = "refuse"  # or "drop"
    tag_keys: str = "refuse"  # or "sanitize"
    csv_delimiter: str = ","
    currency: str = "USD"
    # Chunk rows LZ4-compressed: where they cross a shuffle, go to object storage or to a
    # memory filesystem. Not in chunk files on a local disk (see anycost.inputs.chunk_files).
    compress_rows: bool = True


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    """How rows are delivered: connection, operation, limits, retries, key source, ledger.

    `face` is whom the messages are for: `API` (`max_rejected_rows=0`) or `CLI`
    (`--max_rejected_rows 0`); see `setting_name`."""
    connection_id: Optional[str] = None
    stream_column: Optional[str] = None
    operation: str = "sum"
    api_url: str = "https://api.cloudzero.com"
    api_key_env: str = "CLOUDZERO_API_KEY"
    api_key_secret: Optional[str] = None
    max_body_bytes: int = cbf.MAX_BODY_BYTES
    max_rejected_rows: int = 0
    state_path: Optional[str] = None
    test_namespace: Optional[str] = None
    max_attempts: int = 8
    max_retry_seconds: float = 90.0
    max_concurrent_streams: int = 8
    allowed_lateness_seconds: int = 3600
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    skip_month_check: bool = False
    lease_wait_seconds: float = 900.0  # how long to wait for another run sending a connection
    input_format: str = "cbf"
    mode: str = SEND
    output_dir: Optional[str] = None  # where dry-run bodies are written
    verify: bool = False
    face: str = API

    @property
    def option_prefix(self):
        """"--" on the command line, "" for the Beam API (prefer `setting_name`)."""
        return "--" if self.face == CLI else ""

    def name(self, setting):
        """`setting` as this face's reader calls it."""
        return setting_name(setting, self.face)

    def normalise_settings(self):
        return RowSettings(self.connection_id, self.stream_column, self.operation, self.max_body_bytes,
                        input_format=self.input_format)

    @property
    def needs_api_key(self):
        return self.mode != DRY_RUN

    @property
    def checks_month_limits(self):
        """Whether the sink reads what CloudZero holds before sending a connection's months:
        `sum` adds to a month, so its limits count every earlier drop."""
        return self.mode == SEND and self.operation == "sum" and not self.skip_month_check

    def check(self):
        """Raise ValueError naming the first parameter that is wrong; returns self."""
        problem = self.problem()
        if problem:
            raise ValueError(problem)
        return self

    def problem(self):
        """Why these settings cannot work, naming the parameter as this face's reader knows it, or None."""
        n = self.name
        if (self.connection_id is None) == (self.stream_column is None):
            return (f"give exactly one of {n('connection_id')} (every row goes to that connection) and "
                    f"{n('stream_column')} (a column naming each row's connection)")
        if self.connection_id is not None and not cbf.is_valid_connection_id(self.connection_id):
            return f"{n('connection_id')} {self.connection_id!r} is not allowed ({cbf.CONNECTION_ID_RULE})"
        if self.stream_column is not None and (not isinstance(self.stream_column, str) or not self.stream_column):
            return f"{n('stream_column')} must be a column name, not {self.stream_column!r}"
        if self.operation not in cbf.OPERATIONS:
            return f"{n('operation')} must be one of {', '.join(cbf.OPERATIONS)}, not {self.operation!r}"
        if not isinstance(self.api_url, str):
            return f"{n('api_url')} must be a URL, not {self.api_url!r}"
        url = url_problem(self.api_url, self.face)
        if url:
            return url
        if not isinstance(self.api_key_env, str) or not self.api_key_env.strip():
            return f"{n('api_key_env')} must name an environment variable, not {self.api_key_env!r}"
        if self.api_key_secret is not None and not (isinstance(self.api_key_secret, str)
                                                    and SECRET_RESOURCE.fullmatch(self.api_key_secret)):
            return f"{n('api_key_secret')} must look like projects/P/secrets/S/versions/V"
        for name, low, high in (("max_body_bytes", MIN_BODY_BYTES, cbf.MAX_BODY_BYTES),
                                ("max_rejected_rows", 0, None), ("max_attempts", 1, None),
                                ("max_concurrent_streams", 1, None), ("allowed_lateness_seconds", 0, None)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
                span = f"between {low} and {high:,}" if high else f"a whole number of at least {low}"
                why = " (CloudZero refuses larger bodies)" if name == "max_body_bytes" else ""
                return f"{n(name)} must be {span}{why}, not {value!r}"
        for name in ("max_retry_seconds", "connect_timeout", "read_timeout", "lease_wait_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                return f"{n(name)} must be a number of seconds, not {value!r}"
        if self.test_namespace is not None and not (isinstance(self.test_namespace, str)
                                                    and self.test_namespace.strip()
                                                    and self.test_namespace.isprintable()):
            return f"{n('test_namespace')} must be printable text, not {self.test_namespace!r}"
        if self.state_path is not None and (not isinstance(self.state_path, str) or not self.state_path):
            return f"{n('state_path')} must be a path (local or gs://), not {self.state_path!r}"
        if self.input_format not in INPUT_FORMATS:
            return f"{n('input_format')} must be one of {', '.join(INPUT_FORMATS)}, not {self.input_format!r}"
        if self.mode not in MODES:
            return f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"
        if self.mode == DRY_RUN and not self.output_dir:
            return f"{n('dry_run')} needs {n('output_dir')}, where the bodies are written"
        if self.face not in FACES:
            return f"face must be one of {', '.join(FACES)}, not {self.face!r}"
        return None


@dataclasses.dataclass(frozen=True)
class RunConfig(WriteSettings):
    """The command line's run: the write settings (its messages name flags) plus the inputs
    and where the dead letter and the report go."""
    inputs: Tuple[str, ...] = ()
    dead_letter_path: Optional[str] = None
    report_path: Optional[str] = None
    face: str = CLI
    column_map_file: Optional[str] = None
    column_map: Tuple[Tuple[str, str], ...] = ()  # read from column_map_file at planning
    unknown_columns: str = "refuse"
    tag_keys: str = "refuse"
    csv_delimiter: str = ","
    currency: str = "USD"
    dropped_columns: Tuple[str, ...] = ()  # found at planning, for the report
    input_warnings: Tuple[str, ...] = ()  # found at planning (empty files), for the report
    watch: bool = False  # --watch: poll the patterns and upload each new file once
    poll_interval: float = 60.0
    watch_timeout: Optional[float] = None  # seconds; None: until the job is cancelled

    def normalise_settings(self):
        return RowSettings(self.connection_id, self.stream_column, self.operation, self.max_body_bytes,
                        input_format=self.input_format, column_map=self.column_map,
                        unknown_columns=self.unknown_columns, tag_keys=self.tag_keys,
                        csv_delimiter=self.csv_delimiter, currency=self.currency)

    def write_settings(self):
        """The write path's share of the command line's flags."""
        return WriteSettings(**{field.name: getattr(self, field.name) for field in dataclasses.fields(WriteSettings)})
