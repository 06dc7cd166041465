"""What became of each body: its status and details, the one record every face reports.

No Beam, no HTTP: the sender, the Beam transforms, the report and the progress lines all
read these, so a status means the same everywhere.
"""
import dataclasses
from typing import Optional, Tuple

DELIVERED = "delivered"
ALREADY_DELIVERED = "already_delivered"
FAILED = "failed"
NOT_SENT = "not_sent"
REFUSED = "refused"
DRY_RUN = "dry_run"
VALID = "valid"
INVALID = "invalid"


@dataclasses.dataclass(frozen=True)
class BodyResult:
    connection_id: str
    month: str
    seq: int
    count: int
    rows: int
    bytes: int
    status: str
    attempts: int = 0
    drop_id: Optional[str] = None
    message: str = ""
    idempotency_key: str = ""  # the key of the last attempt
    generation: int = 0  # its key generation
    key_moves: Tuple[str, ...] = ()  # why the body moved to a new key, once per move


def result_for(body, status, **details):
    details.setdefault("idempotency_key", body.idempotency_key)
    return BodyResult(body.connection_id, body.month, body.seq, body.count, body.row_count,
                      body.byte_count, status, **details)
