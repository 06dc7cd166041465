"""Fault injection on create requests: what to inject (``FaultConfig``) and the draws.

Where a fault comes from decides whether CloudZero caches it under the idempotency key:

* application faults (``5xx``, ``503_retry_after``): CloudZero's application answered, so the
  answer is cached and replayed to every retry with that key when errors are cached;
* front faults (``front_5xx``: a load balancer's 502/503/504; ``429``: the gateway): the
  application never saw the request, so they are never cached;
* ``slow`` and ``drop_after_apply``: the drop is applied (its success is cached) and then the
  answer is delayed or lost on its way back, leaving the client in doubt.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Optional

from anycost_emulator.wire import Response, message, with_retry_after

DEFAULT_RETRY_AFTER = 0.05

APPLICATION_FAULTS = frozenset({"5xx", "503_retry_after"})
FRONT_FAULTS = frozenset({"front_5xx", "429"})
AFTER_APPLY_FAULTS = frozenset({"slow", "drop_after_apply"})
SCRIPT_FAULTS = APPLICATION_FAULTS | FRONT_FAULTS | AFTER_APPLY_FAULTS | {"ok"}

_RATES = ("rate_5xx", "rate_429", "rate_slow", "rate_drop_after_apply", "rate_front_5xx")
_FRONT_5XX_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class FaultConfig:
    """Faults injected into create (POST billing_drops) requests. All off by default.

    No fault applies the drop except ``slow`` and ``drop_after_apply``, which apply it first and
    then delay or lose the answer, leaving the client in doubt. Where a fault comes from decides
    whether CloudZero caches it under the idempotency key:

    * application faults (``rate_5xx``, script ``5xx`` / ``503_retry_after``): CloudZero's
      application answered, so the answer is cached and replayed to every retry with that key
      when the emulator runs with ``cache_errors`` (the default), like CloudZero;
    * front faults (``rate_front_5xx``: a load balancer's 502/503/504, script ``front_5xx``;
      ``rate_429``: the gateway's 429): the application never saw the request; never cached.

    ``script`` is consumed one name per create request, before any random decision. An
    application fault drawn for a request whose key already has a cached answer has no effect:
    the key is checked first.
    """

    rate_5xx: float = 0.0
    retry_after_5xx: Optional[float] = None   # set: 5xx are 503 with Retry-After; else 500/502
    rate_429: float = 0.0
    retry_after_429: float = DEFAULT_RETRY_AFTER
    rate_front_5xx: float = 0.0
    retry_after_front_5xx: Optional[float] = None  # set: 503 with Retry-After; else 502/503/504
    rate_slow: float = 0.0
    slow_seconds: float = 1.0
    rate_drop_after_apply: float = 0.0
    forbid_after_drops: Optional[int] = None  # after that many applied drops, every request: 403
    script: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        unknown = [name for name in self.script if name not in SCRIPT_FAULTS]
        if unknown:
            raise ValueError(f"unknown script fault(s) {unknown}; known: {sorted(SCRIPT_FAULTS)}")
        self.script = list(self.script)

    @classmethod
    def from_dict(cls, values: dict) -> "FaultConfig":
        if not isinstance(values, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class FaultSource:
    """The configured faults, their script and a seeded random generator: reproducible draws."""

    def __init__(self, config: Optional[FaultConfig], seed: int) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self.config = config or FaultConfig()
        self._script: collections.deque = collections.deque()
        self.restart()

    def configure(self, config: Optional[FaultConfig]) -> None:
        """New faults; their script starts from the beginning."""
        with self._lock:
            self.config = config or FaultConfig()
            self._script = collections.deque(self.config.script)

    def restart(self) -> None:
        """Re-seed the generator and re-arm the script."""
        with self._lock:
            self._rng = random.Random(self.seed)
            self._script = collections.deque(self.config.script)

    def next_fault(self) -> Optional[str]:
        """The fault for one create request: the next script name, else one random draw."""
        with self._lock:
            config = self.config
            name = self._script.popleft() if self._script else self._draw(config)
            if name == "ok":
                return None
            if name == "5xx" and config.retry_after_5xx is not None:
                return "503_retry_after"
            return name

    def _draw(self, config: FaultConfig) -> Optional[str]:
        draw = self._rng.random()
        for name, rate in (("5xx", config.rate_5xx), ("429", config.rate_429),
                           ("slow", config.rate_slow),
                           ("drop_after_apply", config.rate_drop_after_apply),
                           ("front_5xx", config.rate_front_5xx)):
            if draw < rate:
                return name
            draw -= rate
        return None

    def response(self, name: str) -> Response:
        """The error answer of an application or front fault."""
        with self._lock:
            config = self.config
            if name == "5xx":
                status = self._rng.choice((500, 502))
                return message(status, "Internal Server Error" if status == 500 else "Bad Gateway")
            if name == "503_retry_after":
                wait = config.retry_after_5xx
                return with_retry_after(503, "Service Unavailable",
                                        DEFAULT_RETRY_AFTER if wait is None else wait)
            if name == "429":
                return with_retry_after(429, "Too Many Requests", config.retry_after_429)
            if name == "front_5xx":
                wait = config.retry_after_front_5xx
                if wait is not None:
                    return with_retry_after(503, "Service Unavailable", wait)
                status = self._rng.choice((502, 503, 504))
                return message(status, _FRONT_5XX_TEXT[status])
        raise ValueError(f"{name!r} is not an error fault")
