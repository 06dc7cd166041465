"""JSON in and out of the emulator: strict on the way in, compact on the way out.

orjson is used when installed; the emulator behaves the same without it.
"""
from __future__ import annotations

import json
from typing import Any

try:  # optional speed-up
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    orjson = None


def dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity (orjson is strict by itself)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
