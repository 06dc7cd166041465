"""Resumable runs: one small completion record per body the API accepted.

A record is written only after a 2xx answer, at `<state_path>/<connection>/<month>/<key>.json`.
Each body has its own object, so concurrent writers never share one and no locking is
needed. A rerun over the same input derives the same idempotency keys and skips every
body already recorded, even if the server has long forgotten those keys.
Works on any Beam filesystem (local paths, `gs://`).
"""
import datetime as dt
import json

from apache_beam.io.filesystems import FileSystems


class RunState:
    def __init__(self, state_path):
        self._root = state_path.rstrip("/")

    def _dir(self, connection_id, month):
        return FileSystems.join(self._root, connection_id, month)

    def record_path(self, body):
        return FileSystems.join(self._dir(body.connection_id, body.month), body.idempotency_key + ".json")

    def delivered_keys(self, connection_id):
        """Idempotency keys of every body of `connection_id` recorded as delivered."""
        pattern = FileSystems.join(self._root, connection_id, "*", "*.json")
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # Beam raises when nothing matches on some filesystems
            return set()
        return {m.path.rsplit("/", 1)[-1][:-len(".json")] for m in matches}

    def record(self, body, drop_id, attempts):
        record = {
            "idempotency_key": body.idempotency_key,
            "connection_id": body.connection_id,
            "month": body.month,
            "operation": body.operation,
            "seq": body.seq,
            "rows": body.row_count,
            "bytes": body.byte_count,
            "drop_id": drop_id,
            "attempts": attempts,
            "delivered_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        path = self.record_path(body)
        try:
            FileSystems.mkdirs(self._dir(body.connection_id, body.month))
        except Exception:  # already there, or a filesystem (gs://) without directories
            pass
        with FileSystems.create(path) as handle:
            handle.write(json.dumps(record, sort_keys=True).encode())
