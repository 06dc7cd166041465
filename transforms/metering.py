"""The delivery engine's counts as Beam metrics, the same for every face of the write path."""
from apache_beam.metrics import Metrics


def _publish(tally):
    """Apply what `tally` (an `anycost.delivery.engine.Tally`) counted since the last call to
    Beam's metrics: call it on the bundle's thread, where Beam's metric container lives."""
    counts, latencies_ms, body_bytes = tally.drain()
    for name, count in counts.items():
        Metrics.counter("cloudzero", name).inc(count)
    latency = Metrics.distribution("cloudzero", "request_latency_ms")
    for value in latencies_ms:
        latency.update(value)
    sizes = Metrics.distribution("cloudzero", "body_bytes")
    for value in body_bytes:
        sizes.update(value)
