"""The run's settings as one picklable value: everything the workers need, never the key."""
import dataclasses
from typing import Optional, Tuple

from anycost import cbf
from anycost.normalise import Settings

SEND, DRY_RUN, VALIDATE_ONLY, VERIFY_ONLY = "send", "dry_run", "validate_only", "verify_only"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    inputs: Tuple[str, ...]
    connection_id: Optional[str] = None
    stream_column: Optional[str] = None
    api_url: str = "https://api.cloudzero.com"
    api_key_env: str = "CLOUDZERO_API_KEY"
    api_key_secret: Optional[str] = None
    operation: str = "sum"
    max_body_bytes: int = cbf.MAX_BODY_BYTES
    dead_letter_path: Optional[str] = None
    max_rejected_rows: int = 0
    mode: str = SEND
    output_dir: Optional[str] = None
    report_path: Optional[str] = None
    verify: bool = False
    test_namespace: Optional[str] = None
    state_path: Optional[str] = None
    max_attempts: int = 8
    max_retry_seconds: float = 600.0
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_concurrent_streams: int = 8
    input_format: str = "cbf"
    column_map_file: Optional[str] = None
    column_map: Tuple[Tuple[str, str], ...] = ()  # read from column_map_file at planning
    unknown_columns: str = "refuse"
    tag_keys: str = "refuse"
    csv_delimiter: str = ","
    currency: str = "USD"
    dropped_columns: Tuple[str, ...] = ()  # found at planning, for the report
    input_warnings: Tuple[str, ...] = ()  # found at planning (empty files), for the report

    def normalise_settings(self):
        return Settings(self.connection_id, self.stream_column, self.operation, self.max_body_bytes,
                        input_format=self.input_format, column_map=self.column_map,
                        unknown_columns=self.unknown_columns, tag_keys=self.tag_keys,
                        csv_delimiter=self.csv_delimiter, currency=self.currency)

    @property
    def needs_api_key(self):
        return self.mode != DRY_RUN
