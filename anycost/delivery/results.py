"""What became of each body: its status and details, the one record every face reports.

No Beam, no HTTP: the sender, the Beam transforms, the report and the progress lines all
read these, so a status means the same everywhere.
"""
import dataclasses
from typing import Optional, Tuple

from anycost.bodies import packing

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
    cost: Optional[str] = None  # the rows' exact total cost; known for bodies not delivered (COSTED)


def from_record(record):
    """A BodyResult from its `dataclasses.asdict` as read back from JSON (lists as tuples)."""
    return BodyResult(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


# Bodies that did not reach CloudZero carry their cost, so that a partly delivered month's
# report can show what is in CloudZero and what is not (only those bodies are read for it).
COSTED = frozenset({FAILED, NOT_SENT, INVALID})


def result_for(body, status, **details):
    details.setdefault("idempotency_key", body.idempotency_key)
    if status in COSTED and "cost" not in details:
        details["cost"] = packing.body_cost(body.body)
    return BodyResult(body.connection_id, body.month, body.seq, body.count, body.row_count,
                      body.byte_count, status, **details)
