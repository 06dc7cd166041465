"""Realistic Common Bill Format data for the benchmarks, deterministic from a seed.

    python -m benchmarks.generate --rows 1000000 --out benchmarks/data/rows-1000000-seed-7 --seed 7

writes

* ``parquet/part-NNN.parquet``: typed Parquet, several files of several row groups each:
  tz-aware timestamps, decimal128 costs (negatives, zeros and sub-micro amounts included),
  float64 usage amounts (some only printable with an exponent by ``repr``), descriptions with
  Unicode, quotes and backslashes, three ``resource/tag:*`` columns with gaps, and two
  dictionary-encoded columns (``connection_id``, ``lineitem/type``). ``connection_id`` names each
  row's stream (``--stream_column connection_id``).
* ``csv/part-NNN.csv``: the same rows, as the CBF text a careful exporter would write
  (plain decimals, shortest floats without exponent, ``YYYY-MM-DDTHH:MM:SSZ``, empty = absent).
* ``expected.json``: per (connection, month) the exact row count and ``cost/cost`` total,
  computed here with Python ``Decimal`` from the integers the costs were made from, so a
  benchmark can check what arrived without trusting any code path under test.

Rows are spread evenly over ``connections × months`` stream-months (1,000,000 rows over
10 × 2 gives exactly 50,000 each) and sorted by usage hour, as a billing export is, so every
row group mixes all connections. About 350 bytes of JSON per row.
"""
import argparse
import csv
import datetime as dt
import decimal
import json
import os
import time
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
DEFAULT_ROWS = 1_000_000
DEFAULT_SEED = 7
DEFAULT_CONNECTIONS = 10
DEFAULT_MONTHS = ("2024-08", "2024-09")
DEFAULT_FILES = 8
ROW_GROUPS_PER_FILE = 4
COST_SCALE = 8
COST_TYPE = pa.decimal128(18, COST_SCALE)
STREAM_COLUMN = "connection_id"

TEAMS = ("payments", "search", "checkout", "identity", "ledger", "mobile", "data-eng", "ml-platform",
         "growth", "infra", "support", "security", "billing", "catalog", "media", "edge")
SERVICES = ("AmazonEC2", "AmazonS3", "AmazonRDS", "AWSLambda", "AmazonCloudFront", "AmazonDynamoDB",
            "AmazonEKS", "AmazonRedshift", "AmazonSageMaker", "AWSDataTransfer", "AmazonElastiCache",
            "AmazonKinesis")
UNITS = ("Hrs", "GB-Mo", "Requests", "GB", "vCPU-Hours", "LCU-Hrs")
ENVS = ("prod", "staging", "dev", "qa")
# Line-item types with their share of rows and the sign of their cost.
LINEITEM_TYPES = (("Usage", 0.90, 1), ("Discount", 0.04, -1), ("Credit", 0.02, -1), ("Tax", 0.02, 1),
                  ("Fee", 0.01, 1), ("Support", 0.01, 1))
DESCRIPTIONS = (
    '{n} vCPU "m5.large" – Zürich',
    "S3 Standard «stockage» {n} Go-mois",
    '東京 data transfer "out" #{n}',
    "Lambda {n} ms — ARM ✓",
    'RDS "db.r6g" Multi-AZ, café {n}',
    "Savings Plan crédit -{n}%",
    "EKS pod \\prod\\api-{n}",
    "Größe {n} GB ÷ 30 Tage",
    "DynamoDB RCU ≈ {n}",
    'CloudFront "edge" {n} réqs',
    "Redshift nodo ñ-{n}",
    "SageMaker 학습 {n} h",
)


def _month_bounds(month):
    year, mon = (int(part) for part in month.split("-"))
    start = dt.datetime(year, mon, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return int(start.timestamp()), int((end - start).total_seconds()) // 3600


def connection_names(count):
    return [f"stream-{TEAMS[i % len(TEAMS)]}" + (f"-{i // len(TEAMS)}" if i >= len(TEAMS) else "")
            for i in range(count)]


# --------------------------------------------------------------------------------------------
# CBF text of the typed values (used for the CSV copy and the JSON size estimate)
# --------------------------------------------------------------------------------------------

def decimal_text(unscaled, scale=COST_SCALE):
    """Plain decimal text of unscaled integers, e.g. -5 at scale 8 -> "-0.00000005"."""
    unit = 10 ** scale
    out = []
    for value in unscaled.tolist():
        magnitude = -value if value < 0 else value
        out.append(f"{'-' if value < 0 else ''}{magnitude // unit}.{magnitude % unit:0{scale}d}")
    return out


def float_text(value):
    """Shortest round-trip decimal of a float, never in exponent notation, no trailing `.0`."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def timestamp_text(seconds):
    return [dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            for s in seconds.tolist()]


# --------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------

class Columns:
    """The generated rows, column by column: raw values (numpy) and their typed Arrow arrays."""

    def __init__(self, rows, seed, connections, months):
        rng = np.random.default_rng(seed)
        names = connection_names(connections)
        stream_months = connections * len(months)
        # Even spread over stream-months, then a shuffle; rows are later sorted by hour.
        stream = rng.permutation(np.arange(rows) % stream_months)
        connection = stream // len(months)
        month = stream % len(months)
        bounds = np.array([_month_bounds(m) for m in months], np.int64)
        hour = (rng.random(rows) * bounds[month, 1]).astype(np.int64)
        start = bounds[month, 0] + hour * 3600
        order = np.lexsort((connection, start))  # a billing export: by hour, then account
        self.rows = rows
        self.connection_names = names
        self.connection = connection[order]
        self.start = start[order]
        rng = np.random.default_rng(seed + 1)

        shares = np.array([share for _, share, _ in LINEITEM_TYPES])
        self.lineitem_type = rng.choice(len(LINEITEM_TYPES), rows, p=shares / shares.sum())
        signs = np.array([sign for _, _, sign in LINEITEM_TYPES])[self.lineitem_type]
        # Costs: log-uniform from 1e-8 to 1e3 dollars, 1% exact zeros, signed by line-item type.
        magnitude = np.floor(10 ** rng.uniform(0, 11, rows)).astype(np.int64)
        magnitude[rng.random(rows) < 0.01] = 0
        self.cost = signs * magnitude
        discounted = self.cost - self.cost // 10
        self.discounted_present = rng.random(rows) >= 0.3
        self.discounted = np.where(self.discounted_present, discounted, 0)

        kind = rng.random(rows)
        amount = np.where(kind < 0.6, 1.0, np.round(rng.gamma(2.0, 40.0, rows), 6))
        tiny = kind > 0.95  # values whose repr has an exponent: 1.25e-05
        amount[tiny] = np.round(rng.uniform(1, 9, tiny.sum()), 2) * 10.0 ** -rng.integers(5, 9, tiny.sum())
        self.amount = amount
        self.amount_present = rng.random(rows) >= 0.02

        self.description = rng.integers(0, len(DESCRIPTIONS), rows)
        self.description_n = rng.integers(1, 5000, rows)
        self.resource = rng.integers(0, 4000, rows)
        self.service = rng.integers(0, len(SERVICES), rows)
        self.unit = rng.integers(0, len(UNITS), rows)
        self.team = rng.integers(0, len(TEAMS), rows)
        self.team_present = rng.random(rows) >= 0.1
        self.env = rng.integers(0, len(ENVS), rows)
        self.env_present = rng.random(rows) >= 0.2
        self.cost_center = rng.integers(1000, 1100, rows)
        self.cost_center_present = rng.random(rows) >= 0.75
        self.seed = seed

    # -- text columns shared by Parquet and CSV --------------------------------------------

    def text_columns(self, lo, hi):
        """The string-valued columns of rows [lo, hi) as Python lists (None = absent)."""
        rows = range(lo, hi)
        resources = [f"i-{(r * 2654435761) % (1 << 40):010x}" for r in self.resource[lo:hi].tolist()]
        return {
            "lineitem/id": [f"li-{i:09d}" for i in rows],
            "lineitem/description": [DESCRIPTIONS[d].format(n=n) for d, n in
                                     zip(self.description[lo:hi].tolist(), self.description_n[lo:hi].tolist())],
            "resource/id": resources,
            "resource/service": [SERVICES[s] for s in self.service[lo:hi].tolist()],
            "usage/units": [UNITS[s] for s in self.unit[lo:hi].tolist()],
            "resource/tag:team": _maybe([TEAMS[s] for s in self.team[lo:hi].tolist()], self.team_present[lo:hi]),
            "resource/tag:env": _maybe([ENVS[s] for s in self.env[lo:hi].tolist()], self.env_present[lo:hi]),
            "resource/tag:cost-center": _maybe([f"cc-{s}" for s in self.cost_center[lo:hi].tolist()],
                                               self.cost_center_present[lo:hi]),
        }

    def arrow_table(self, lo, hi):
        """Typed Arrow columns for rows [lo, hi), in the column order of the files."""
        text = self.text_columns(lo, hi)
        n = hi - lo
        starts = self.start[lo:hi] * 1_000_000
        conn_dict = pa.array(self.connection_names, pa.string())
        type_dict = pa.array([name for name, _, _ in LINEITEM_TYPES], pa.string())
        columns = {
            STREAM_COLUMN: pa.DictionaryArray.from_arrays(pa.array(self.connection[lo:hi], pa.int32()), conn_dict),
            "lineitem/id": pa.array(text["lineitem/id"], pa.string()),
            "lineitem/type": pa.DictionaryArray.from_arrays(pa.array(self.lineitem_type[lo:hi], pa.int8()),
                                                            type_dict),
            "lineitem/description": pa.array(text["lineitem/description"], pa.string()),
            "time/usage_start": pa.array(starts, pa.timestamp("us", tz="UTC")),
            "resource/id": pa.array(text["resource/id"], pa.string()),
            "resource/service": pa.array(text["resource/service"], pa.string()),
            "usage/amount": pa.array(self.amount[lo:hi], pa.float64(), mask=~self.amount_present[lo:hi]),
            "usage/units": pa.array(text["usage/units"], pa.string()),
            "cost/cost": _decimal_array(self.cost[lo:hi], np.ones(n, bool)),
            "cost/discounted_cost": _decimal_array(self.discounted[lo:hi], self.discounted_present[lo:hi]),
            "resource/tag:team": pa.array(text["resource/tag:team"], pa.string()),
            "resource/tag:env": pa.array(text["resource/tag:env"], pa.string()),
            "resource/tag:cost-center": pa.array(text["resource/tag:cost-center"], pa.string()),
        }
        return pa.table(columns)

    def csv_columns(self, lo, hi):
        """The same rows as CBF text, in the same column order ('' = absent)."""
        text = self.text_columns(lo, hi)
        amounts = [float_text(a) if present else "" for a, present in
                   zip(self.amount[lo:hi].tolist(), self.amount_present[lo:hi].tolist())]
        discounted = [t if present else "" for t, present in
                      zip(decimal_text(self.discounted[lo:hi]), self.discounted_present[lo:hi].tolist())]
        return {
            STREAM_COLUMN: [self.connection_names[c] for c in self.connection[lo:hi].tolist()],
            "lineitem/id": text["lineitem/id"],
            "lineitem/type": [LINEITEM_TYPES[t][0] for t in self.lineitem_type[lo:hi].tolist()],
            "lineitem/description": text["lineitem/description"],
            "time/usage_start": timestamp_text(self.start[lo:hi]),
            "resource/id": text["resource/id"],
            "resource/service": text["resource/service"],
            "usage/amount": amounts,
            "usage/units": text["usage/units"],
            "cost/cost": decimal_text(self.cost[lo:hi]),
            "cost/discounted_cost": discounted,
            "resource/tag:team": [v or "" for v in text["resource/tag:team"]],
            "resource/tag:env": [v or "" for v in text["resource/tag:env"]],
            "resource/tag:cost-center": [v or "" for v in text["resource/tag:cost-center"]],
        }


def _maybe(values, present):
    return [v if p else None for v, p in zip(values, present.tolist())]


def _decimal_array(unscaled, present):
    """decimal128 from unscaled int64 values: 16-byte little-endian two's complement."""
    words = np.empty((len(unscaled), 2), np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    validity = None
    if not present.all():
        validity = pa.py_buffer(np.packbits(present, bitorder="little").tobytes())
    return pa.Array.from_buffers(COST_TYPE, len(unscaled), [validity, pa.py_buffer(words.tobytes())],
                                 null_count=int((~present).sum()))


# --------------------------------------------------------------------------------------------
# Expected totals: Python Decimal from the generating integers, nothing shared with the readers
# --------------------------------------------------------------------------------------------

def expected_totals(columns):
    exact = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                            traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation])
    totals = {}
    unit = Decimal(10) ** -COST_SCALE
    with decimal.localcontext(exact):
        for conn, start, cost in zip(columns.connection.tolist(), columns.start.tolist(), columns.cost.tolist()):
            month = dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m")
            entry = totals.setdefault(columns.connection_names[conn], {}).setdefault(month, [0, Decimal(0)])
            entry[0] += 1
            entry[1] += Decimal(cost) * unit
    streams = {conn: {month: {"rows": rows, "cost": format(cost, "f")}
                      for month, (rows, cost) in sorted(months.items())}
               for conn, months in sorted(totals.items())}
    with decimal.localcontext(exact):
        total = sum((Decimal(m["cost"]) for months in streams.values() for m in months.values()), Decimal(0))
    return streams, format(total, "f")


def _json_bytes_per_row(columns, sample=20_000):
    """Average bytes of one row's CBF JSON (orjson of the CSV text, absent values left out)."""
    try:
        import orjson
        dumps = orjson.dumps
    except ImportError:  # pragma: no cover
        dumps = lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    n = min(sample, columns.rows)
    text = columns.csv_columns(0, n)
    names = [name for name in text if name != STREAM_COLUMN]
    total = 0
    for values in zip(*(text[name] for name in names)):
        total += len(dumps({k: v for k, v in zip(names, values) if v})) + 1
    return round(total / max(n, 1), 1)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def file_ranges(rows, files):
    files = max(1, min(files, rows))
    edges = np.linspace(0, rows, files + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def generate(out, rows=DEFAULT_ROWS, seed=DEFAULT_SEED, connections=DEFAULT_CONNECTIONS,
             months=DEFAULT_MONTHS, files=DEFAULT_FILES, csv_copy=True, log=print):
    """Write the data set to `out`; returns the expected.json content."""
    started = time.monotonic()
    columns = Columns(rows, seed, connections, tuple(months))
    os.makedirs(os.path.join(out, "parquet"), exist_ok=True)
    if csv_copy:
        os.makedirs(os.path.join(out, "csv"), exist_ok=True)
    written = []
    for index, (lo, hi) in enumerate(file_ranges(rows, files)):
        table = columns.arrow_table(lo, hi)
        group = max(1, -(-(hi - lo) // ROW_GROUPS_PER_FILE))
        path = os.path.join(out, "parquet", f"part-{index:03d}.parquet")
        pq.write_table(table, path, row_group_size=group)
        written.append(path)
        if csv_copy:
            text = columns.csv_columns(lo, hi)
            with open(os.path.join(out, "csv", f"part-{index:03d}.csv"), "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(list(text))
                writer.writerows(zip(*text.values()))
    streams, total = expected_totals(columns)
    expected = {
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "seed": seed,
        "connections": connections,
        "months": list(months),
        "files": len(written),
        "row_groups_per_file": ROW_GROUPS_PER_FILE,
        "stream_column": STREAM_COLUMN,
        "json_bytes_per_row": _json_bytes_per_row(columns),
        "total_cost": total,
        "streams": streams,
    }
    with open(os.path.join(out, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1)
    log(f"generated {rows:,} rows in {len(written)} Parquet files{' + CSV' if csv_copy else ''} "
        f"under {out} in {time.monotonic() - started:.1f} s "
        f"(≈{expected['json_bytes_per_row']} bytes of JSON per row)")
    return expected


def load_expected(out):
    with open(os.path.join(out, "expected.json")) as handle:
        return json.load(handle)


def ensure(out, rows=DEFAULT_ROWS, seed=DEFAULT_SEED, connections=DEFAULT_CONNECTIONS,
           months=DEFAULT_MONTHS, files=DEFAULT_FILES, csv_copy=True, log=print):
    """Generate into `out` unless a complete data set with these parameters is already there."""
    try:
        expected = load_expected(out)
        if (expected.get("format_version") == FORMAT_VERSION and expected["rows"] == rows
                and expected["seed"] == seed and expected["connections"] == connections
                and expected["months"] == list(months)
                and (not csv_copy or os.path.isdir(os.path.join(out, "csv")))):
            return expected
    except (OSError, ValueError, KeyError):
        pass
    return generate(out, rows, seed, connections, months, files, csv_copy, log)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--out", required=True, help="directory to write parquet/, csv/ and expected.json")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--months", default=",".join(DEFAULT_MONTHS), help="comma-separated YYYY-MM")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--no_csv", action="store_true")
    args = parser.parse_args(argv)
    generate(args.out, args.rows, args.seed, args.connections, tuple(args.months.split(",")), args.files,
             not args.no_csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
