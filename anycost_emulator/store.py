"""What the emulator holds: per test-key namespace, connection and month, with the monthly limits.

Two kinds of month: ``StoredMonth`` keeps every row (store mode, so that tests can read them
back); ``CountedMonth`` keeps only the row count and the exact cost per UTC hour (throughput
mode, so that a million-row benchmark stays cheap). Both apply the three operations (sum,
replace_hourly, replace_drop) and refuse a drop that would pass the monthly limits, changing
nothing. Costs are Decimal and added without rounding whatever their magnitudes.

Not thread-safe on its own: the emulator calls it under its lock.
"""

from __future__ import annotations

import decimal
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, NamedTuple, Optional, Union

from anycost_emulator.jsoncodec import dumps
from anycost_emulator.rules import (
    DEFAULT_OPERATION, envelope_errors, error_summary, parse_month, utc_hour, valid_month,
    valid_number)

# Read at call time, so tests can monkeypatch them.
MONTH_ROW_LIMIT = 1_000_000
MONTH_BYTE_LIMIT = 70_000_000

# Exact decimal arithmetic: additions never round, whatever the magnitudes involved.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation],
)


def exact_sum(values: Iterable[Decimal], start: Decimal = Decimal(0)) -> Decimal:
    with decimal.localcontext(_EXACT):
        return sum(values, start)


def money(value: Decimal) -> str:
    return format(value, "f")


class StoredRow(NamedTuple):  # a NamedTuple: cheap to create a million of
    row: Optional[dict]       # None: a preloaded block of `count` rows, counted but not kept
    hour: str
    cost: Decimal
    nbytes: int
    count: int = 1


@dataclass
class Batch:
    """A validated body (or a preload), prepared outside the emulator's lock."""

    month: str
    operation: str
    row_count: int
    cost: Decimal
    nbytes: int = 0
    rows: list = field(default_factory=list)           # store mode: [StoredRow]
    hours: dict = field(default_factory=dict)          # throughput: {hour: [rows, cost]}


def limit_error(month: str, rows: int, nbytes: Optional[int]) -> Optional[str]:
    if rows > MONTH_ROW_LIMIT:
        return f"month {month} would hold {rows} rows, more than the limit of {MONTH_ROW_LIMIT}"
    if nbytes is not None and nbytes > MONTH_BYTE_LIMIT:
        return (f"month {month} would hold {nbytes} bytes of rows, "
                f"more than the limit of {MONTH_BYTE_LIMIT}")
    return None


class StoredMonth:
    """Store mode: the rows of one (connection, month), in upload order."""

    def __init__(self) -> None:
        self.rows: list[StoredRow] = []
        self.row_count = 0
        self.nbytes = 0
        self.cost = Decimal(0)
        self.bodies = 0

    def apply(self, batch: Batch) -> Optional[str]:
        """Apply a drop; on a limit error return the message and change nothing."""
        if batch.operation == "sum":
            kept, kept_count = self.rows, self.row_count
            kept_bytes, kept_cost = self.nbytes, self.cost
        elif batch.operation == "replace_drop":
            kept, kept_count, kept_bytes, kept_cost = [], 0, 0, Decimal(0)
        else:  # replace_hourly: drop the stored rows of every hour the body mentions
            hours = {r.hour for r in batch.rows}
            kept = [r for r in self.rows if r.hour not in hours]
            kept_count = sum(r.count for r in kept)
            kept_bytes = sum(r.nbytes for r in kept)
            kept_cost = exact_sum(r.cost for r in kept)
        error = limit_error(batch.month, kept_count + batch.row_count, kept_bytes + batch.nbytes)
        if error:
            return error
        if kept is self.rows:
            self.rows.extend(batch.rows)
        else:
            self.rows = kept + batch.rows
        self.row_count = kept_count + batch.row_count
        self.nbytes = kept_bytes + batch.nbytes
        self.cost = exact_sum([batch.cost], kept_cost)
        return None

    def sent_rows(self) -> list[dict]:
        """The rows kept, in upload order (preloaded rows are counted, not kept)."""
        return [r.row for r in self.rows if r.row is not None]


class CountedMonth:
    """Throughput mode: per UTC hour, the row count and exact cost sum; no rows kept."""

    def __init__(self) -> None:
        self.hours: dict[str, list] = {}
        self.row_count = 0
        self.bodies = 0

    @property
    def cost(self) -> Decimal:
        return exact_sum(agg[1] for agg in self.hours.values())

    def apply(self, batch: Batch) -> Optional[str]:
        if batch.operation == "sum":
            kept_rows = self.row_count
        elif batch.operation == "replace_drop":
            kept_rows = 0
        else:
            kept_rows = self.row_count - sum(
                self.hours[h][0] for h in batch.hours if h in self.hours)
        error = limit_error(batch.month, kept_rows + batch.row_count, None)
        if error:
            return error
        if batch.operation == "replace_drop":
            self.hours = {}
        for hour, (rows, cost) in batch.hours.items():
            current = self.hours.get(hour)
            if current is None or batch.operation == "replace_hourly":
                self.hours[hour] = [rows, cost]
            else:
                current[0] += rows
                current[1] = exact_sum([cost], current[1])
        self.row_count = kept_rows + batch.row_count
        return None


@dataclass
class Connection:
    months: dict = field(default_factory=dict)    # month -> StoredMonth | CountedMonth
    drops: list = field(default_factory=list)     # [{"drop_id", "month", "row_count"}]


# --------------------------------------------------------------------------------------------
# Bodies as batches (outside the lock)
# --------------------------------------------------------------------------------------------

def store_batch(obj: dict) -> Batch:
    """A fully validated body as stored rows."""
    rows = []
    with decimal.localcontext(_EXACT):
        for row in obj["data"]:
            hour = utc_hour(row["time/usage_start"])
            rows.append(StoredRow(row, hour, Decimal(row["cost/cost"]), len(dumps(row))))
    return Batch(
        month=parse_month(obj["month"]),
        operation=obj.get("operation", DEFAULT_OPERATION),
        row_count=len(rows),
        cost=exact_sum(r.cost for r in rows),
        nbytes=sum(r.nbytes for r in rows),
        rows=rows,
    )


def _count_hours(data: list) -> dict:
    """Throughput mode: {utc hour: [rows, exact cost]}. Raises on malformed rows."""
    hours: dict[str, list] = {}
    hour_of: dict[str, Optional[str]] = {}  # rows share few timestamps: parse each once
    with decimal.localcontext(_EXACT):
        for row in data:
            start = row["time/usage_start"]
            hour = hour_of.get(start)
            if hour is None:
                hour = hour_of[start] = utc_hour(start)
            if hour is None:
                raise ValueError("bad time/usage_start")
            cost = Decimal(row["cost/cost"])
            agg = hours.get(hour)
            if agg is None:
                hours[hour] = [1, cost]
            else:
                agg[0] += 1
                agg[1] += cost
    if not all(agg[1].is_finite() for agg in hours.values()):
        raise ValueError("cost/cost is not a finite number")
    return hours


def throughput_batch(obj: Any) -> Union[Batch, str]:
    """Light checks only (envelope shape, then per-hour counting): a batch or the problem."""
    problems = [e for e in envelope_errors(obj) if not e.startswith("unknown top-level")]
    if problems:
        return error_summary(problems)
    try:
        hours = _count_hours(obj["data"])
    except (KeyError, TypeError, AttributeError, ValueError, decimal.InvalidOperation) as exc:
        return f"data: malformed row ({type(exc).__name__}: {str(exc)[:80]})"
    return Batch(
        month=parse_month(obj["month"]),
        operation=obj.get("operation", DEFAULT_OPERATION),
        row_count=sum(agg[0] for agg in hours.values()),
        cost=exact_sum(agg[1] for agg in hours.values()),
        hours=hours,
    )


def preload_batch(month: str, rows: int, cost: str, nbytes: int) -> Batch:
    """`rows` rows summed into the month's first hour, without building them one by one."""
    if not valid_month(month):
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError("rows must be a whole number of at least 1")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError("nbytes must be a whole number of at least 0")
    if not valid_number(cost):
        raise ValueError(f"cost must be a decimal number as text, got {cost!r}")
    total = Decimal(cost)
    hour = f"{month}-01T00"
    return Batch(month=month, operation="sum", row_count=rows, cost=total, nbytes=nbytes,
                 rows=[StoredRow(None, hour, total, nbytes, rows)], hours={hour: [rows, total]})


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

class Store:
    """Every namespace's connections and months. ``None`` is the real (non test-key) namespace."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._namespaces: dict[Optional[str], dict[str, Connection]] = {}

    def apply(self, namespace: Optional[str], connection: str, batch: Batch,
              body: bool = True) -> Union[dict, str]:
        """The drop record, or the limit error (and nothing changed, nothing created).
        ``body``: count it in the month's bodies (a preload is not a body)."""
        conn = self._namespaces.get(namespace, {}).get(connection) or Connection()
        month = conn.months.get(batch.month)
        if month is None:
            month = StoredMonth() if self.mode == "store" else CountedMonth()
        error = month.apply(batch)
        if error:
            return error
        month.bodies += int(body)
        conn.months[batch.month] = month
        self._namespaces.setdefault(namespace, {})[connection] = conn
        drop = {"drop_id": str(uuid.uuid4()), "month": batch.month, "row_count": batch.row_count}
        conn.drops.append(drop)
        return dict(drop)

    def connection(self, namespace: Optional[str], connection: str) -> Optional[Connection]:
        return self._namespaces.get(namespace, {}).get(connection)

    def month(self, namespace: Optional[str], connection: str,
              month: str) -> Union[StoredMonth, CountedMonth, None]:
        conn = self.connection(namespace, connection)
        return conn.months.get(month) if conn else None

    def drops(self, namespace: Optional[str], connection: str) -> list[dict]:
        conn = self.connection(namespace, connection)
        return [dict(d) for d in conn.drops] if conn else []

    def totals(self, namespace: Optional[str]) -> dict:
        """{connection: {month: {"rows": int, "cost": Decimal, "bodies": int}}}."""
        return {
            name: {
                month: {"rows": m.row_count, "cost": m.cost, "bodies": m.bodies}
                for month, m in conn.months.items()
            }
            for name, conn in self._namespaces.get(namespace, {}).items()
        }

    def named_namespaces(self) -> list[str]:
        return [ns for ns in self._namespaces if ns is not None]
