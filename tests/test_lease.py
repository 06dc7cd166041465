"""The connection lease: atomic on a local disk and on GCS, renewed, expiring, waited for."""
import os
import subprocess
import sys
import threading

import pytest

from anycost.delivery import lease as leases
from anycost.delivery.lease import ConnectionLease, GcsLeaseStore, Holder, LeaseBusy, LeaseKeeper, LocalLeaseStore


class Clock:
    def __init__(self):
        self.now = 1_000_000.0
        self.slept = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def holder(name):
    return Holder(f"host-{name}", 4242, "2026-12-07T03:00:00Z", f"run-{name}")


def lease_for(store, name, clock, alive=lambda h: True, seconds=60.0):
    return ConnectionLease(store, "conn", holder=holder(name), seconds=seconds, clock=clock.time,
                           sleep=clock.sleep, is_alive=alive)


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
    if request.param == "local":
        return lambda: LocalLeaseStore(str(tmp_path / "conn" / "lease"))
    client = FakeGcsClient()
    return lambda: GcsLeaseStore("gs://bucket/state/conn/lease", client)


def test_only_one_run_takes_a_free_lease(store):
    clock = Clock()
    first, second = lease_for(store(), "a", clock), lease_for(store(), "b", clock)
    assert first.acquire(0) is None and first.held
    with pytest.raises(LeaseBusy) as busy:
        second.acquire(0)
    message = str(busy.value)
    assert "process 4242 on host host-a, started 2026-12-07T03:00:00Z" in message
    assert "run this command again" in message and "lease_wait_seconds" in message
    assert not second.held


def test_a_run_waits_for_a_released_lease_then_takes_it(store):
    clock = Clock()
    first, second = lease_for(store(), "a", clock), lease_for(store(), "b", clock)
    first.acquire(0)
    sleeps = []

    def sleep_then_release(seconds):  # the first run finishes while the second waits
        sleeps.append(seconds)
        clock.now += seconds
        if len(sleeps) == 3:
            first.release()
    second._sleep = sleep_then_release
    assert second.acquire(600) is None and second.held and len(sleeps) == 3
    assert not first.renew()  # the first run can tell it no longer holds it


def test_an_expired_lease_is_taken_over_and_its_holder_loses_it(store):
    clock = Clock()
    first, second = lease_for(store(), "a", clock), lease_for(store(), "b", clock)
    first.acquire(0)
    clock.now += 61  # the first run stopped renewing (SIGKILL on another host)
    assert second.acquire(0) == holder("a")
    assert not first.renew() and not first.held
    assert second.renew()


def test_a_renewed_lease_stays_live(store):
    clock = Clock()
    first, second = lease_for(store(), "a", clock), lease_for(store(), "b", clock)
    first.acquire(0)
    for _ in range(5):
        clock.now += 30
        assert first.renew()
    with pytest.raises(LeaseBusy):
        second.acquire(0)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(store):
    clock = Clock()
    lease_for(store(), "a", clock).acquire(0)
    second = lease_for(store(), "b", clock, alive=lambda h: h.host != "host-a")
    assert second.acquire(0) == holder("a")


def test_two_runs_racing_for_an_expired_lease_cannot_both_win(store):
    """Both read the same expired version; the compare-and-swap lets exactly one write."""
    clock = Clock()
    lease_for(store(), "a", clock).acquire(0)
    clock.now += 61
    register = store()
    content, version = register.read()
    assert register.put(b"{}", version) is not None
    assert store().put(b"{}", version) is None


def test_process_is_alive_tells_a_killed_process_from_a_live_one():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    me = Holder.this_process()
    other = Holder(me.host, child.pid, me.started_at, "x")
    assert leases.process_is_alive(other)
    child.kill()
    child.wait()
    assert not leases.process_is_alive(other)
    assert leases.process_is_alive(Holder("some-other-host", child.pid, me.started_at, "x"))


def test_the_keeper_renews_from_a_thread_and_notices_a_takeover(tmp_path):
    store = LocalLeaseStore(str(tmp_path))
    clock = Clock()
    lease = ConnectionLease(store, "conn", holder=holder("a"), seconds=0.3)
    lease.acquire(0)
    with LeaseKeeper(lease) as keeper:
        threading.Event().wait(0.5)  # a few renewals
        assert not keeper.lost
        _, version = store.read()
        assert version >= 1
        # another run takes the lease (as after an expiry): the next renewal finds out
        assert store.put(leases.encode(holder("b"), clock.now + 600), version) is not None
        threading.Event().wait(0.5)
        assert keeper.lost
    content, _ = store.read()
    assert leases.decode(content)[0] == holder("b")  # the loser does not release the winner's lease


def test_a_local_lease_is_never_seen_half_written(tmp_path):
    store = LocalLeaseStore(str(tmp_path))
    version = None
    for n in range(20):
        version = store.put(leases.encode(holder(str(n)), 1.0), version)
    assert sorted(os.listdir(tmp_path)) == ["18", "19"]  # old versions are cleaned, no temporaries
    assert leases.decode(store.read()[0])[0] == holder("19")


def test_a_ledger_on_another_filesystem_is_refused_clearly():
    with pytest.raises(ValueError, match="s3:// cannot hold a lease"):
        leases.store_for("s3://bucket/state", "conn")


# A stand-in for google.cloud.storage.Client: the calls GcsLeaseStore makes, with GCS's
# generation preconditions (412 when `if_generation_match` does not hold; 0 means "absent").

class PreconditionFailed(Exception):
    code = 412


class FakeGcsClient:
    def __init__(self):
        self.objects = {}  # (bucket, name) -> (content, generation)
        self.generation = 0
        self.lock = threading.Lock()
        self.calls = []

    def bucket(self, name):
        return FakeBucket(self, name)


class FakeBucket:
    def __init__(self, client, name):
        self.client, self.name = client, name

    def blob(self, name):
        return FakeBlob(self, name)

    def get_blob(self, name):
        stored = self.client.objects.get((self.name, name))
        if stored is None:
            return None
        blob = FakeBlob(self, name)
        blob.generation = stored[1]
        return blob


class FakeBlob:
    def __init__(self, bucket, name):
        self.bucket, self.name, self.generation = bucket, name, None

    def _key(self):
        return self.bucket.name, self.name

    def download_as_bytes(self, if_generation_match=None):
        client = self.bucket.client
        client.calls.append(("download", if_generation_match))
        content, generation = client.objects[self._key()]
        if if_generation_match is not None and generation != if_generation_match:
            raise PreconditionFailed("412 conditionNotMet")
        return content

    def upload_from_string(self, data, content_type=None, if_generation_match=None):
        client = self.bucket.client
        client.calls.append(("upload", if_generation_match))
        assert if_generation_match is not None, "every lease write must carry a generation precondition"
        with client.lock:
            current = client.objects.get(self._key())
            current_generation = current[1] if current else 0
            if current_generation != if_generation_match:
                raise PreconditionFailed("412 conditionNotMet")
            client.generation += 1
            client.objects[self._key()] = (data, client.generation)
            self.generation = client.generation


def test_on_gcs_the_first_write_requires_absence_and_later_ones_the_generation_read():
    client = FakeGcsClient()
    clock = Clock()
    first = lease_for(GcsLeaseStore("gs://bucket/state/conn/lease", client), "a", clock)
    first.acquire(0)
    first.renew()
    first.release()
    uploads = [match for call, match in client.calls if call == "upload"]
    assert uploads[0] == 0 and uploads[1:] == [1, 2]
    assert ("bucket", "state/conn/lease") in client.objects
