"""One sender per connection across runs: a lease in the ledger, taken atomically, renewed, expiring.

Two runs on one ledger (an orchestrator retrying a live attempt, two people starting the same
backfill) would otherwise send the same connection at once: CloudZero forbids concurrent
requests per connection, and a refusal for concurrency could make a body look undelivered.
A run takes the connection's lease before its first request and holds it until its last.

The lease is a compare-and-swap register (`LocalLeaseStore`, `GcsLeaseStore`): every write
names the version it replaces, so of two runs that both saw the same expired lease only one
can take it. A live holder renews it every third of its time to live; a lease past its expiry,
or held by a process of this host that no longer exists, is abandoned and may be taken. No
Beam here; the clock, the sleep and the process check are passed in.
"""
import dataclasses
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from anycost.config import API, setting_name

LEASE_SECONDS = 60.0  # a SIGKILLed run blocks others at most this long (less on the same host)
DEFAULT_WAIT_SECONDS = 900.0  # how long a run waits for another run's lease before giving up


class LeaseBusy(Exception):
    """Another run holds the connection's lease and did not let go within the wait."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease, in the words an operator needs to find it."""
    host: str
    pid: int
    started_at: str
    run_id: str

    @classmethod
    def this_process(cls):
        started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(socket.gethostname(), os.getpid(), started, uuid.uuid4().hex)

    def describe(self):
        return f"process {self.pid} on host {self.host}, started {self.started_at}"


RELEASED = b'{"released": true}'  # a lease let go: free, and no takeover to report


def encode(holder: Holder, expires_at: float) -> bytes:
    return json.dumps({"holder": dataclasses.asdict(holder), "expires_at": expires_at}, sort_keys=True).encode()


def decode(data: bytes):
    """(Holder, expires_at) from a stored lease, or None when it is released or unreadable."""
    try:
        record = json.loads(data)
        return Holder(**record["holder"]), float(record["expires_at"])
    except Exception:  # pylint: disable=broad-except
        return None


def process_is_alive(holder: Holder) -> bool:
    """False only when `holder` is a process of this host that no longer runs."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class LocalLeaseStore:
    """A register on a local filesystem: version n lives in `<directory>/<n>`, created with
    `os.link` from a finished temporary file, which fails if `<n>` exists (as `O_EXCL` does) and
    never shows a half-written lease."""

    def __init__(self, directory):
        self._dir = directory

    def read(self):
        """(content, version), or (None, None) when there has never been a lease."""
        try:
            versions = sorted(int(name) for name in os.listdir(self._dir) if name.isdigit())
        except FileNotFoundError:
            return None, None
        for version in reversed(versions):
            try:
                with open(os.path.join(self._dir, str(version)), "rb") as handle:
                    return handle.read(), version
            except FileNotFoundError:  # cleaned up under us: an older one; look again
                continue
        return None, None

    def put(self, content: bytes, replacing) -> Optional[int]:
        """Write `content` as the version after `replacing` (None: the first); the new version,
        or None when another writer got there first."""
        os.makedirs(self._dir, exist_ok=True)
        version = 0 if replacing is None else replacing + 1
        temporary = os.path.join(self._dir, f".{uuid.uuid4().hex}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, os.path.join(self._dir, str(version)))
        except FileExistsError:
            return None
        finally:
            os.unlink(temporary)
        for older in range(max(0, version - 8), version - 1):  # keep the last two, for readers
            try:
                os.unlink(os.path.join(self._dir, str(older)))
            except FileNotFoundError:
                pass
        return version


def _precondition_failed(err):
    """GCS answers 412 when an `if_generation_match` does not hold."""
    return getattr(err, "code", None) == 412 or type(err).__name__ == "PreconditionFailed"


class GcsLeaseStore:
    """A register on Cloud Storage: one object; its generation is the version, and every write
    carries `if_generation_match` (0: the object must not exist), so GCS itself refuses the
    second of two writers. `client` is a `google.cloud.storage.Client` (made when omitted)."""

    def __init__(self, gs_path, client=None):
        bucket, _, name = gs_path[len("gs://"):].partition("/")
        if client is None:
            from google.cloud import storage  # pylint: disable=import-outside-toplevel
            client = storage.Client()
        self._bucket, self._name = client.bucket(bucket), name

    def read(self):
        blob = self._bucket.get_blob(self._name)
        if blob is None:
            return None, None
        try:
            return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
        except Exception as err:  # pylint: disable=broad-except
            if _precondition_failed(err) or getattr(err, "code", None) == 404:
                return self.read()  # rewritten (or released) between the two calls
            raise

    def put(self, content: bytes, replacing) -> Optional[int]:
        blob = self._bucket.blob(self._name)
        try:
            blob.upload_from_string(content, content_type="application/json",
                                    if_generation_match=0 if replacing is None else replacing)
        except Exception as err:  # pylint: disable=broad-except
            if _precondition_failed(err):
                return None
            raise
        return blob.generation


def store_for(state_root, connection_id, gcs_client=None):
    """The lease register of `connection_id` in the ledger at `state_root` (a local path or gs://)."""
    root = state_root.rstrip("/")
    if root.startswith("gs://"):
        return GcsLeaseStore(f"{root}/{connection_id}/lease", gcs_client)
    if "://" in root:
        raise ValueError(f"a ledger on {root.split('://')[0]}:// cannot hold a lease: use a local path or gs://")
    return LocalLeaseStore(os.path.join(root, connection_id, "lease"))


class ConnectionLease:
    """The lease of one connection, for one run: acquire (waiting up to a bound), renew, release."""

    def __init__(self, store, connection_id, holder: Holder = None, seconds=LEASE_SECONDS,
                 clock: Callable[[], float] = time.time, sleep=time.sleep, is_alive=process_is_alive,
                 log=None, face=API):
        self._store, self._connection = store, connection_id
        self.holder = holder or Holder.this_process()
        self._seconds, self._clock, self._sleep, self._is_alive = seconds, clock, sleep, is_alive
        self._log = log or (lambda message: None)
        self._face = face
        self._version = None

    def acquire(self, wait_seconds=DEFAULT_WAIT_SECONDS):
        """Take the lease, waiting while another live run holds it; raise LeaseBusy naming the
        holder when `wait_seconds` pass first. Returns the holder this run took over from, or None."""
        deadline, announced = self._clock() + wait_seconds, False
        while True:
            content, version = self._store.read()
            current = decode(content) if content is not None else None
            if current is None or current[0] == self.holder or self._abandoned(*current):
                new = self._store.put(encode(self.holder, self._clock() + self._seconds), version)
                if new is not None:
                    self._version = new
                    if current is not None and current[0] != self.holder:
                        self._log(f"{self._connection}: took over the lease of {current[0].describe()}, "
                                  "which is no longer running or stopped renewing it")
                        return current[0]
                    return None
                continue  # another run took it first: look again
            holder, expires_at = current
            if self._clock() >= deadline:
                raise LeaseBusy(self._busy_message(holder, expires_at, wait_seconds))
            if not announced:
                self._log(f"{self._connection}: waiting for another run that is sending it: "
                          f"{holder.describe()} (lease until {_when(expires_at)}); waiting up to "
                          f"{wait_seconds:g} s")
                announced = True
            self._sleep(max(0.05, min(1.0, expires_at - self._clock(), deadline - self._clock())))

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (another run took it), so sending must stop."""
        if self._version is None:
            return False
        new = self._store.put(encode(self.holder, self._clock() + self._seconds), self._version)
        if new is None:
            self._version = None
            return False
        self._version = new
        return True

    def release(self):
        """Let the next run in at once, instead of after the expiry."""
        if self._version is not None:
            self._store.put(RELEASED, self._version)
            self._version = None

    @property
    def seconds(self):
        return self._seconds

    @property
    def held(self):
        return self._version is not None

    def _abandoned(self, holder, expires_at):
        return expires_at <= self._clock() or not self._is_alive(holder)

    def _busy_message(self, holder, expires_at, wait_seconds):
        return (f"{self._connection} is being sent by another run ({holder.describe()}); its lease runs "
                f"until {_when(expires_at)} and was still live after waiting {wait_seconds:g} s. Nothing of "
                f"{self._connection} was sent by this run. Let that run finish, then run this command again: it "
                "resumes from the ledger and sends nothing twice. If that run is gone for good (its host is "
                "lost), its lease expires by itself within {self._seconds:g} s; "
                f"{setting_name('lease_wait_seconds', self._face)} sets how long a run waits")


class LeaseKeeper:
    """Renews a held lease from a daemon thread every third of its time to live; `lost` turns
    true (and stays) when a renewal finds another run holding it."""

    def __init__(self, lease: ConnectionLease):
        self._lease, self._every = lease, lease.seconds / 3
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="anycost-lease")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if not self.lost:
            self._lease.release()

    def _run(self):
        while not self._stop.wait(self._every):
            try:
                if not self._lease.renew():
                    self.lost = True
                    return
            except Exception:  # pylint: disable=broad-except  # a blip: the next renewal tries again
                continue


def _when(timestamp):
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
