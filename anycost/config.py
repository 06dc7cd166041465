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
    watch: bool = False  # --watch: poll the patterns and upload each new file once
    poll_interval: float = 60.0
    watch_timeout: Optional[float] = None  # seconds; None: until the job is cancelled

    def normalise_settings(self):
        return Settings(self.connection_id, self.stream_column, self.operation, self.max_body_bytes)

    @property
    def needs_api_key(self):
        return self.mode != DRY_RUN
