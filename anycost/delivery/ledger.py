"""Resumable runs: a small ledger of what each body's delivery reached.

A body's identity is (connection, month, operation, body number, body hash); its digest is
the body's generation-0 idempotency key, and names its objects under
`<state_path>/<connection>/<month>/`:

- `<identity>.json`: delivered. Written only after a 2xx answer; holds the key generation
  that was accepted. A rerun skips the body whichever generation it was.
- `<identity>.pending.json`: the key generation the body is about to use, written before
  its first attempt under that generation, and whether an attempt under it may have been
  applied (`in_doubt`). A rerun resumes from it, so a generation that an earlier run (or a
  crashed worker) may have got applied is never left behind for the next one.

Each body has its own objects. One run at a time sends a connection: it holds the
connection's lease (`anycost.delivery.lease`, under `<state_path>/<connection>/lease`) while
it does. `<state_path>/<connection>/drops_seen.json` lists the drops CloudZero held before
the ledger's runs sent anything, for resolving a body in doubt (`anycost.delivery.reconcile`).
Records work on any Beam filesystem; the lease needs a local path or `gs://`.
"""
import dataclasses
import datetime as dt
import json
from typing import FrozenSet, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

DELIVERED_SUFFIX = ".json"
PENDING_SUFFIX = ".pending.json"
DROPS_SEEN = "drops_seen.json"


@dataclasses.dataclass(frozen=True)
class ConnectionLedger:
    """What one listing of a connection's records says: identities delivered, and in progress."""
    delivered: FrozenSet[str] = frozenset()
    pending: FrozenSet[str] = frozenset()

    def is_delivered(self, body):
        return body.idempotency_key in self.delivered

    def has_progress(self, body):
        return body.idempotency_key in self.pending


class RunState:
    def __init__(self, state_path):
        self._root = state_path.rstrip("/")

    def _dir(self, connection_id, month):
        return FileSystems.join(self._root, connection_id, month)

    def record_path(self, body, suffix=DELIVERED_SUFFIX):
        return FileSystems.join(self._dir(body.connection_id, body.month), body.idempotency_key + suffix)

    def load(self, connection_id) -> ConnectionLedger:
        """Every record of `connection_id`, from one listing."""
        pattern = FileSystems.join(self._root, connection_id, "*", "*.json")
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # Beam raises when nothing matches on some filesystems
            return ConnectionLedger()
        delivered, pending = set(), set()
        for metadata in matches:
            name = metadata.path.replace("\\", "/").rsplit("/", 1)[-1]
            if name.endswith(PENDING_SUFFIX):
                pending.add(name[:-len(PENDING_SUFFIX)])
            else:
                delivered.add(name[:-len(DELIVERED_SUFFIX)])
        return ConnectionLedger(frozenset(delivered), frozenset(pending))

    def delivered_keys(self, connection_id):
        """Identities (generation-0 keys) of every body of `connection_id` recorded as delivered."""
        return set(self.load(connection_id).delivered)

    @property
    def root(self):
        return self._root

    def resolve(self, connection_id, identity, applied_drop_id=None):
        """An operator's answer for a body in doubt that the listing could not decide: applied
        (as drop `applied_drop_id`), or not (the body takes its next key). Returns the record."""
        pattern = FileSystems.join(self._root, connection_id, "*", identity + PENDING_SUFFIX)
        try:
            [metadata] = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # pylint: disable=broad-except
            raise ValueError(f"the ledger {self._root} holds no body {identity} of {connection_id} in doubt") from None
        with FileSystems.open(metadata.path) as handle:
            record = json.loads(handle.read())
        if applied_drop_id:
            delivered = dict(record, drop_id=applied_drop_id, resolved_by_operator=True, delivered_at=_now())
            delivered.pop("in_doubt", None)
            with FileSystems.create(metadata.path[:-len(PENDING_SUFFIX)] + DELIVERED_SUFFIX) as handle:
                handle.write(json.dumps(delivered, sort_keys=True).encode())
            FileSystems.delete([metadata.path])
            return delivered
        moved = dict(record, generation=int(record["generation"]) + 1, in_doubt=False,
                     resolved_by_operator=True, updated_at=_now())
        moved.pop("idempotency_key", None)  # the next run computes the next key from the body
        with FileSystems.create(metadata.path) as handle:
            handle.write(json.dumps(moved, sort_keys=True).encode())
        return moved

    def lease_store(self, connection_id, gcs_client=None):
        from anycost.delivery import lease  # pylint: disable=import-outside-toplevel
        return lease.store_for(self._root, connection_id, gcs_client)

    def _records(self, connection_id, suffix):
        pattern = FileSystems.join(self._root, connection_id, "*", "*" + suffix)
        try:
            paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception:  # pylint: disable=broad-except  # nothing matches
            return []
        records = []
        for path in paths:
            if suffix == DELIVERED_SUFFIX and path.endswith(PENDING_SUFFIX):
                continue
            try:
                with FileSystems.open(path) as handle:
                    records.append(json.loads(handle.read()))
            except Exception:  # pylint: disable=broad-except
                records.append({"identity": path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0],
                                "unreadable": True})
        return records

    def delivered_records(self, connection_id):
        """Every delivered record of `connection_id` (each with its drop id, month and rows)."""
        return self._records(connection_id, DELIVERED_SUFFIX)

    def in_doubt(self, connection_id):
        """Identities of the connection's undelivered bodies whose last attempt may have been
        applied (an unreadable record counts as in doubt)."""
        delivered = self.load(connection_id).delivered
        return {r.get("identity") for r in self._records(connection_id, PENDING_SUFFIX)
                if (r.get("unreadable") or r.get("in_doubt")) and r.get("identity") not in delivered}

    def drops_seen(self, connection_id):
        """The drop ids CloudZero listed before this ledger's runs sent anything, or None."""
        try:
            with FileSystems.open(FileSystems.join(self._root, connection_id, DROPS_SEEN)) as handle:
                return set(json.loads(handle.read())["drop_ids"])
        except Exception:  # pylint: disable=broad-except  # never listed (or unreadable)
            return None

    def note_drops_seen(self, connection_id, drop_ids):
        """Keep what CloudZero lists now; only while no body of the connection is in doubt."""
        directory = FileSystems.join(self._root, connection_id)
        try:
            FileSystems.mkdirs(directory)
        except Exception:  # pylint: disable=broad-except
            pass
        with FileSystems.create(FileSystems.join(directory, DROPS_SEEN)) as handle:
            handle.write(json.dumps({"drop_ids": sorted(drop_ids), "listed_at": _now()}).encode())

    def progress(self, body) -> Optional[Tuple[int, bool]]:
        """(key generation, in doubt) an earlier run left for `body`, or None."""
        try:
            with FileSystems.open(self.record_path(body, PENDING_SUFFIX)) as handle:
                record = json.loads(handle.read())
            return int(record["generation"]), bool(record["in_doubt"])
        except Exception:  # pylint: disable=broad-except
            return None  # absent or unreadable: nothing is known, which the caller treats as a start

    def record_progress(self, body, generation, in_doubt):
        """Note the key generation `body` is about to use (write-ahead) or gave up under."""
        self._write(body, PENDING_SUFFIX, {
            "identity": body.idempotency_key, "connection_id": body.connection_id, "month": body.month,
            "operation": body.operation, "seq": body.seq, "generation": generation,
            "idempotency_key": body.key_for(generation), "in_doubt": in_doubt,
            "updated_at": _now()})

    def record(self, body, drop_id, attempts, generation=0, files=None):
        """Note that `body` was delivered, under key `generation`; `files`: where its month's rows came from."""
        self._write(body, DELIVERED_SUFFIX, {
            "identity": body.idempotency_key,
            "idempotency_key": body.key_for(generation),
            "generation": generation,
            "connection_id": body.connection_id,
            "month": body.month,
            "operation": body.operation,
            "seq": body.seq,
            "rows": body.row_count,
            "bytes": body.byte_count,
            "drop_id": drop_id,
            "attempts": attempts,
            "delivered_at": _now(),
            "files": list(files or ()),
        })
        try:  # the pending record has done its job; fewer of them keep `in_doubt` quick
            FileSystems.delete([self.record_path(body, PENDING_SUFFIX)])
        except Exception:  # pylint: disable=broad-except  # never written, or already gone
            pass

    def _write(self, body, suffix, record):
        path = self.record_path(body, suffix)
        try:
            FileSystems.mkdirs(self._dir(body.connection_id, body.month))
        except Exception:  # already there, or a filesystem (gs://) without directories
            pass
        with FileSystems.create(path) as handle:
            handle.write(json.dumps(record, sort_keys=True).encode())


def _now():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
