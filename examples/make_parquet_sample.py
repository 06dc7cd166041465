"""Writes examples/sample/team-c-2024-09.parquet: typed columns, as a data platform would export them.

Decimal costs, zoned timestamps, float amounts and a dictionary-encoded column, so the local
demo shows that typed Parquet becomes exact CBF text. Run again to regenerate the file.
"""
import datetime as dt
import pathlib
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).parent
UTC = dt.timezone.utc


def main():
    starts = [dt.datetime(2024, 9, day, hour, tzinfo=UTC) for day, hour in ((2, 0), (2, 1), (3, 0))]
    table = pa.table({
        "connection_id": pa.array(["example-data"] * 3).dictionary_encode(),
        "lineitem/type": pa.array(["Usage", "Usage", "Credit"]).dictionary_encode(),
        "time/usage_start": pa.array(starts, pa.timestamp("us", tz="UTC")),
        "resource/id": ["db/orders", "db/orders", "db/orders"],
        "resource/service": ["Database", "Database", "Database"],
        "usage/amount": pa.array([0.5, 1.25e-05, 2.0], pa.float64()),
        "cost/cost": pa.array([Decimal("1.2345"), Decimal("0.0001"), Decimal("-0.5000")], pa.decimal128(12, 4)),
    })
    pq.write_table(table, HERE / "sample" / "team-c-2024-09.parquet")


if __name__ == "__main__":
    main()
