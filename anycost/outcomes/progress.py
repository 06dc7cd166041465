"""Progress lines for long runs: what was read and sent so far, and how fast.

Plain text handed to a `say` callable (the pipeline passes a logger's `info`), so the same
lines show up in a terminal, in Airflow's task log and in Dataflow's logs. Lines are
throttled by time, never written per row; the clock is injected so that tests need no
waiting. Each reader and sender reports what it did itself: on a local run that is the
whole run. No Beam, no HTTP.
"""
import threading
import time

EVERY_SECONDS = 5.0


def amount(byte_count):
    """Bytes for a person: 512 bytes, 48.2 kB, 367.0 MB, 1.20 GB."""
    if byte_count < 1000:
        return f"{byte_count} bytes"
    if byte_count < 1e6:
        return f"{byte_count / 1e3:.1f} kB"
    if byte_count < 1e9:
        return f"{byte_count / 1e6:.1f} MB"
    return f"{byte_count / 1e9:,.2f} GB"


def duration(seconds):
    """A duration for a person: 4 s, 2 min 05 s, 1 h 12 min."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Throttle:
    """True at most once every `every` seconds."""

    def __init__(self, clock, every):
        self._clock, self._every = clock, every
        self._last = clock()

    def due(self):
        now = self._clock()
        if now - self._last < self._every:
            return False
        self._last = now
        return True


class ReadProgress:
    """Rows read, files done and rows per second, while reading.

    `parts_per_file` maps each input path to the number of parts it is read in (a big
    Parquet file is read in several); a file is done when all its parts are.
    """

    def __init__(self, parts_per_file, say, clock=time.monotonic, every=EVERY_SECONDS):
        self._parts_left = dict(parts_per_file)
        self._parts_total = dict(parts_per_file)
        self._say, self._clock = say, clock
        self._throttle = _Throttle(clock, every)
        self._started = clock()
        self._lock = threading.Lock()
        self.rows_read = self.files_done = 0

    def rows(self, count):
        """Call after each batch; says a progress line every few seconds."""
        with self._lock:
            self.rows_read += count
            if self._throttle.due():
                self._say(f"reading: {self._totals()}")

    def part_done(self, path, rows, rejected):
        """Call when a file, or one part of a big file, has been read: always says a line."""
        with self._lock:
            total = self._parts_total.get(path, 1)
            left = self._parts_left[path] = self._parts_left.get(path, 1) - 1
            if left <= 0:
                self.files_done += 1
            what = path if total == 1 else f"{path} (part {total - left} of {total})"
            rejects = f" ({rejected:,} rejected)" if rejected else ""
            self._say(f"read {what}: {rows:,} rows{rejects}; {self._totals()}")

    def _totals(self):
        elapsed = self._clock() - self._started
        rate = f", {self.rows_read / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        return f"{self.rows_read:,} rows, {self.files_done} of {len(self._parts_total)} files done{rate}"


class SendProgress:
    """Bodies done of the total, bytes, and an estimate of the time left, while sending.

    `expect` adds bodies as their connections arrive; `track` wraps the bodies as they are
    handed to the sender and counts each one done once the sender asks for the next.
    Safe to use from several sending threads.
    """

    def __init__(self, say, clock=time.monotonic, every=EVERY_SECONDS):
        self._say, self._clock = say, clock
        self._throttle = _Throttle(clock, every)
        self._lock = threading.Lock()
        self._started = None
        self.bodies_total = self.bytes_total = self.bodies_done = self.bytes_done = 0

    def expect(self, bodies, byte_count):
        with self._lock:
            if self._started is None:
                self._started = self._clock()
            self.bodies_total += bodies
            self.bytes_total += byte_count

    def done(self, byte_count):
        """One body finished (whatever its outcome)."""
        with self._lock:
            self.bodies_done += 1
            self.bytes_done += byte_count
            finished = self.bodies_done >= self.bodies_total
            if finished or self._throttle.due():
                self._say(self._line(finished))

    def track(self, bodies):
        for body in bodies:
            yield body
            self.done(body.byte_count)

    def _line(self, finished):
        elapsed = self._clock() - (self._started if self._started is not None else self._clock())
        counts = (f"{self.bodies_done:,} of {self.bodies_total:,} bodies done, "
                  f"{amount(self.bytes_done)} of {amount(self.bytes_total)}")
        if finished:
            return f"sending: {counts}, in {duration(elapsed)}"
        if not self.bytes_done:
            return f"sending: {counts}"
        left = elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done
        return f"sending: {counts}, about {duration(left)} left"
