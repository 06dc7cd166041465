"""The naive per-row Beam pipeline: what most people write first.

    CLOUDZERO_API_KEY=... python -m benchmarks.naive_pipeline --input 'DATA/parquet/*.parquet' \
        --stream_column connection_id --api_url http://127.0.0.1:PORT

One element per row all the way: ``beam.io.ReadFromParquet`` yields a dict of Python values per
row, a ``Map`` turns it into CBF text and ``json.dumps`` it, keyed by (connection, month); a plain
``GroupByKey`` gathers each stream-month, and a DoFn packs bodies of at most 5,000,000 bytes and
POSTs them with ``requests``. It is correct (exact decimals, UTC timestamps, no exponents) but
pays Beam's per-element cost several times per row. It shows what the chunked design is worth.

It runs on Beam's in-process FnApiRunner, pinned explicitly (in_memory, one worker), so the
DirectRunner never tries to download Prism. On that runner bundles run one after another, so
each connection sees one request at a time.
"""
import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from decimal import Decimal

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

MAX_BODY_BYTES = 5_000_000
API_PREFIX = "/v2/connections/billing/anycost"


def cbf_text(value):
    """A Python value from ReadFromParquet as CBF text (None stays None = absent)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            text = format(Decimal(text), "f")
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return text + "Z"
    return str(value)


def to_keyed_json(record, stream_column):
    row = {}
    for name, value in record.items():
        text = cbf_text(value)
        if text is not None and text != "":
            row[name] = text
    connection = row.pop(stream_column)
    return (connection, row["time/usage_start"][:7]), json.dumps(row)


class PackAndPost(beam.DoFn):
    """((connection, month), [row JSON]) -> one (connection, month, body count) per stream-month."""

    def __init__(self, api_url, operation, max_body_bytes):
        self._api_url = api_url.rstrip("/")
        self._operation = operation
        self._max_body_bytes = max_body_bytes

    def setup(self):
        import requests
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers.update({"Authorization": os.environ["CLOUDZERO_API_KEY"],
                                      "Content-Type": "application/json"})

    def teardown(self):
        self._session.close()

    def process(self, element):
        (connection, month), rows = element
        prefix = json.dumps({"month": month, "operation": self._operation})[:-1].encode() + b', "data": ['
        room = self._max_body_bytes - len(prefix) - 2
        current, size, seq = [], 0, 0
        for row in rows:
            data = row.encode("utf-8")
            extra = len(data) + (2 if current else 0)
            if current and size + extra > room:
                seq += 1
                self._post(connection, month, seq, prefix + b", ".join(current) + b"]}")
                current, size, extra = [], 0, len(data)
            current.append(data)
            size += extra
        if current:
            seq += 1
            self._post(connection, month, seq, prefix + b", ".join(current) + b"]}")
        yield connection, month, seq

    def _post(self, connection, month, seq, body):
        key = hashlib.sha256(f"{connection}|{month}|{seq}|".encode() + body).hexdigest()
        response = self._session.post(f"{self._api_url}{API_PREFIX}/{connection}/billing_drops", data=body,
                                      headers={"cloudzero-idempotency-key": key}, timeout=(10, 300))
        if response.status_code != 200:
            raise RuntimeError(f"{connection} {month} body {seq}: HTTP {response.status_code} {response.text[:300]}")


def build(p, patterns, stream_column, api_url, operation="sum", max_body_bytes=MAX_BODY_BYTES):
    reads = [p | f"Read{i}" >> beam.io.ReadFromParquet(pattern) for i, pattern in enumerate(patterns)]
    rows = reads[0] if len(reads) == 1 else reads | beam.Flatten()
    return (rows
            | "ToJson" >> beam.Map(to_keyed_json, stream_column)
            | "GroupByStreamMonth" >> beam.GroupByKey()
            | "PackAndPost" >> beam.ParDo(PackAndPost(api_url, operation, max_body_bytes)))


def run(patterns, stream_column, api_url, operation="sum", max_body_bytes=MAX_BODY_BYTES):
    started = time.monotonic()
    options = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        build(p, patterns, stream_column, api_url, operation, max_body_bytes)
    return {"contender": "naive-beam", "seconds": round(time.monotonic() - started, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", required=True, help="glob of Parquet files; repeatable")
    parser.add_argument("--stream_column", required=True)
    parser.add_argument("--api_url", required=True)
    parser.add_argument("--operation", default="sum")
    parser.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES)
    args = parser.parse_args(argv)
    if not os.environ.get("CLOUDZERO_API_KEY"):
        print("error: set CLOUDZERO_API_KEY", file=sys.stderr)
        return 2
    print(json.dumps(run(args.input, args.stream_column, args.api_url, args.operation, args.max_body_bytes)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
