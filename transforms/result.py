"""What `WriteToAnyCost` returns: three PCollections, as `WriteToBigQuery` returns a `WriteResult`."""
import dataclasses
import typing

import apache_beam as beam

from anycost import delivery


class WriteToAnyCostResult(typing.NamedTuple):
    """The outcome of a `WriteToAnyCost`, one record (a dict) per body or row.

    Attributes:
      delivered: one record per body CloudZero accepted (status `delivered`), or that an
        earlier run already delivered (`already_delivered`, from the `state_path` ledger):
        connection_id, month, seq, count, rows, bytes, status, attempts, drop_id, message,
        idempotency_key.
      failed: one record per body refused (`invalid`), failed for good (`failed`) or held
        back (`not_sent`), with the reason in `message`; and one per stream-month CloudZero's
        limits refuse (`refused`, seq 0). Same fields as `delivered`, plus `cost`, the exact
        total of the body's rows (None for a refused month).
      rejected: one record per rejected row: `{"reason": ..., "values": {column: text}}`;
        rows of a `CbfBatch` (from `ReadCbf`) also name their `file` and `row`.
      stream_months: bounded input only (else None): one `anycost.bodies.packing.StreamMonthPlan`
        per stream-month, without its bodies: connection_id, month, row_count, body_count,
        body_bytes, cost_total, and why CloudZero's limits refuse it (`refused`), if they do.
      body_results: bounded input only (else None): one `anycost.delivery.BodyResult` per
        body, as `delivered` and `failed` hold them as dicts (without refused months), for
        reports such as the command line's.
    """
    delivered: beam.PCollection
    failed: beam.PCollection
    rejected: beam.PCollection
    stream_months: typing.Optional[beam.PCollection] = None
    body_results: typing.Optional[beam.PCollection] = None


DELIVERED, FAILED = "delivered", "failed"
REFUSED = "refused"
_GOOD = {delivery.DELIVERED, delivery.ALREADY_DELIVERED}


def _record(result: delivery.BodyResult) -> dict:
    return dataclasses.asdict(result)


def _split_body_result(result):
    """A BodyResult to the `delivered` main output or the `failed` tagged output."""
    if isinstance(result, delivery.BodyResult):  # not verification records: only the CLI asks for them
        if result.status in _GOOD:
            yield _record(result)
        else:
            yield beam.pvalue.TaggedOutput(FAILED, _record(result))


def _refused_month(summary):
    """A stream-month over CloudZero's limits: no body is built, so it is reported itself."""
    if summary.refused:
        yield _record(delivery.BodyResult(summary.connection_id, summary.month, 0, 0, summary.row_count, 0,
                                         REFUSED, message=summary.refused))
