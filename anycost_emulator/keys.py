"""The idempotency-key cache: the first answer to a key, replayed to every later request with it.

CloudZero caches that answer "warts and all" (status, headers and body, success or error) and
scopes a key to the HTTP method and path; the emulator also scopes it to the test-key namespace,
a separate world of its own. A replay whose body differs from the first one is still replayed,
and counted, because CloudZero does not look at the body either.

Not thread-safe on its own: the emulator calls it under its lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import NamedTuple, Optional

from anycost_emulator.wire import Request, Response


class _Remembered(NamedTuple):
    response: Response
    digest: bytes


def body_digest(data: Optional[bytes]) -> bytes:
    return hashlib.blake2b(data or b"", digest_size=16).digest()


def key_scope(request: Request) -> Optional[tuple]:
    """Where a key is looked up: None when the request carries no key."""
    if request.idempotency_key is None:
        return None
    return (request.namespace, request.method, request.path, request.idempotency_key)


class KeyCache:
    def __init__(self) -> None:
        self._answers: dict[tuple, _Remembered] = {}
        self.replays = 0
        self.error_replays = 0
        self.mismatches = 0

    def replay(self, scope: tuple, digest: bytes) -> Optional[Response]:
        """The cached answer (marked replayed), or None when the key is new."""
        remembered = self._answers.get(scope)
        if remembered is None:
            return None
        self.replays += 1
        if remembered.response.status != 200:
            self.error_replays += 1
        if remembered.digest != digest:
            self.mismatches += 1
        return dataclasses.replace(remembered.response, replayed=True)

    def remember(self, scope: tuple, response: Response, digest: bytes) -> None:
        self._answers[scope] = _Remembered(response, digest)

    def forget(self) -> None:
        """Forget every answer; the counters stay."""
        self._answers.clear()
