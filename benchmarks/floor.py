"""The plain-Python floor: what a competent script does without Beam.

    CLOUDZERO_API_KEY=... python -m benchmarks.floor --input 'DATA/parquet/*.parquet' \
        --stream_column connection_id --api_url http://127.0.0.1:PORT

1. pyarrow reads each Parquet file batch by batch;
2. each column becomes CBF text with vectorised Arrow casts (decimals cast to string, timestamps
   converted to UTC and formatted, floats cast to their shortest text), and only the few values
   Arrow prints with an exponent (``1E-8``, ``1e+22``) are re-rendered one by one with ``Decimal``;
3. every row becomes a dict (absent values left out) and goes through ``orjson.dumps``;
4. each serialised row is appended at once to its (connection, month)'s open body, in input
   order; a body is closed before it would pass 5,000,000 bytes;
5. bodies are POSTed with ``requests``, one at a time, stream after stream, with the raw
   ``Authorization`` header and a deterministic ``cloudzero-idempotency-key``.

No validation beyond what the data needs, no retries, no parallelism: it is the yardstick, not
a product. It prints one JSON line with what it did.
"""
import argparse
import glob
import hashlib
import json
import os
import sys
import time
from decimal import Decimal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import requests

MAX_BODY_BYTES = 5_000_000
BATCH_ROWS = 65_536
API_PREFIX = "/v2/connections/billing/anycost"


# --------------------------------------------------------------------------------------------
# Columns to CBF text
# --------------------------------------------------------------------------------------------

def _plain_number(text):
    """Arrow's `1E-8` / `0E-8` (decimals) or `1.5e-7` / `1e+22` (floats) as plain decimal text.

    Exact: Decimal parses the text Arrow printed. A decimal keeps its scale; a float (Arrow
    prints those with a lower-case `e`) keeps only its shortest digits."""
    rendered = format(Decimal(text), "f")
    if "." in rendered and "e" in text:
        rendered = rendered.rstrip("0").rstrip(".")
    return rendered


def _fix_exponents(text):
    """Replace the values Arrow printed with an exponent; everything else stays vectorised."""
    mask = pc.fill_null(pc.match_substring(text, "e", ignore_case=True), False)
    if not pc.any(mask).as_py():
        return text
    odd = pc.filter(text, mask).to_pylist()
    return pc.replace_with_mask(text, mask, pa.array([_plain_number(v) for v in odd], pa.string()))


def column_text(column):
    """One Arrow column as a Python list of CBF text (None where the value is absent)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return column_text(column.dictionary_decode())
    if pa.types.is_timestamp(kind):
        if kind.tz is not None and kind.tz != "UTC":
            column = column.cast(pa.timestamp(kind.unit, tz="UTC"))
        text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
        if kind.unit != "s":
            text = pc.replace_substring_regex(text, r"\.?0+$", "")
        text = pc.binary_join_element_wise(text, "Z", "")
    elif pa.types.is_decimal(kind) or pa.types.is_floating(kind):
        text = _fix_exponents(pc.cast(column, pa.string()))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = column
    else:
        text = pc.cast(column, pa.string())
    return text.to_pylist()


# --------------------------------------------------------------------------------------------
# Rows to bodies
# --------------------------------------------------------------------------------------------

class StreamMonth:
    """One (connection, month): rows appended to the open body as they are serialised.

    Each row's bytes are copied into a bytearray at once: keeping orjson's result objects
    alive would cost ~4-8 KB of RSS per row, because orjson over-allocates the `bytes` it
    returns (a 370-byte row holds an 8 KB buffer) and never shrinks it.
    """

    def __init__(self, month, operation="sum", max_body_bytes=MAX_BODY_BYTES):
        self.prefix = b'{"month":"%s","operation":"%s","data":[' % (month.encode(), operation.encode())
        self.room = max_body_bytes - len(self.prefix) - 2  # without the closing `]}`
        self.bodies = []
        self.current = bytearray()
        self.rows = 0

    def add(self, row):
        if len(row) > self.room:
            raise ValueError(f"a row of {len(row)} bytes cannot fit in a body")
        if self.current and len(self.current) + 1 + len(row) > self.room:
            self.close_body()
        if self.current:
            self.current += b","
        self.current += row
        self.rows += 1

    def close_body(self):
        if self.current:
            self.bodies.append(self.prefix + bytes(self.current) + b"]}")
            self.current = bytearray()

    def finish(self):
        self.close_body()
        return self.bodies


class KeptRows(StreamMonth):
    """`--keep_rows`: the variant that keeps every row's orjson `bytes` until the end and packs
    then. Same output, but each kept row pins orjson's over-allocated buffer (~8 KB here), so
    1,000,000 rows take about 4 GB: how the issue's 25-30 s, 4.7 GB floor behaves."""

    def __init__(self, month, operation="sum", max_body_bytes=MAX_BODY_BYTES):
        super().__init__(month, operation, max_body_bytes)
        self.kept = []

    def add(self, row):
        self.kept.append(row)

    def finish(self):
        if self.kept:
            kept, self.kept = self.kept, []
            for row in kept:
                super().add(row)
        return super().finish()


def read_rows(paths, stream_column, operation="sum", max_body_bytes=MAX_BODY_BYTES, group_type=StreamMonth):
    """{(connection, month): StreamMonth} with every row packed, in input order; and the row count."""
    groups = {}
    rows = 0
    dumps = orjson.dumps
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            names = batch.schema.names
            texts = [column_text(column) for column in batch.columns]
            stream_at = names.index(stream_column)
            start_at = names.index("time/usage_start")
            for values in zip(*texts):
                row = {name: value for name, value in zip(names, values) if value is not None and value != ""}
                del row[stream_column]
                key = (values[stream_at], values[start_at][:7])
                group = groups.get(key)
                if group is None:
                    group = groups[key] = group_type(key[1], operation, max_body_bytes)
                group.add(dumps(row))
            rows += batch.num_rows
    return groups, rows


def post_all(groups, api_url, key, operation="sum"):
    """POST every body, one at a time; raise on the first non-200 answer."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"Authorization": key, "Content-Type": "application/json"})
    base = api_url.rstrip("/") + API_PREFIX
    bodies = sent_bytes = 0
    try:
        for (connection, month) in sorted(groups):
            for seq, body in enumerate(groups[(connection, month)].finish(), 1):
                idempotency = hashlib.sha256(b"%s|%s|%s|%d|" % (connection.encode(), month.encode(),
                                                                 operation.encode(), seq) + body).hexdigest()
                response = session.post(f"{base}/{connection}/billing_drops", data=body, timeout=(10, 300),
                                        headers={"cloudzero-idempotency-key": idempotency})
                if response.status_code != 200:
                    raise RuntimeError(f"{connection} {month} body {seq}: HTTP {response.status_code} "
                                       f"{response.text[:300]}")
                bodies += 1
                sent_bytes += len(body)
    finally:
        session.close()
    return bodies, sent_bytes


def run(patterns, stream_column, api_url, key, operation="sum", max_body_bytes=MAX_BODY_BYTES, keep_rows=False):
    started = time.monotonic()
    paths = sorted({path for pattern in patterns for path in glob.glob(pattern)})
    if not paths:
        raise SystemExit(f"no file matches {patterns}")
    groups, rows = read_rows(paths, stream_column, operation, max_body_bytes, KeptRows if keep_rows else StreamMonth)
    read_seconds = time.monotonic() - started
    bodies, sent_bytes = post_all(groups, api_url, key, operation)
    return {"contender": "floor-keep-rows" if keep_rows else "floor", "rows": rows, "stream_months": len(groups), "bodies": bodies,
            "bytes": sent_bytes, "read_seconds": round(read_seconds, 3),
            "seconds": round(time.monotonic() - started, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", required=True, help="glob of Parquet files; repeatable")
    parser.add_argument("--stream_column", required=True)
    parser.add_argument("--api_url", required=True)
    parser.add_argument("--operation", default="sum")
    parser.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES)
    parser.add_argument("--keep_rows", action="store_true",
                        help="keep every row's orjson bytes and pack at the end (the memory-hungry variant)")
    args = parser.parse_args(argv)
    key = os.environ.get("CLOUDZERO_API_KEY")
    if not key:
        print("error: set CLOUDZERO_API_KEY", file=sys.stderr)
        return 2
    print(json.dumps(run(args.input, args.stream_column, args.api_url, key, args.operation, args.max_body_bytes,
                         args.keep_rows)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
