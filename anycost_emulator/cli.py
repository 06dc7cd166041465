"""The command line: ``python -m anycost_emulator [options]`` serves until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from typing import Optional

from anycost_emulator.emulator import DEFAULT_MAX_BODY_BYTES, Emulator
from anycost_emulator.faults import FaultConfig
from anycost_emulator.server import LOOPBACK

DESCRIPTION = """\
A local stand-in for CloudZero's AnyCost Stream API, for testing an adaptor without sending
anything to CloudZero. It serves the AnyCost Stream calls on http://127.0.0.1:PORT:

  POST /v2/connections/billing/anycost/{connection_id}/billing_drops          create a drop
  GET  /v2/connections/billing/anycost/{connection_id}/billing_drops          list drops
  GET  /v2/connections/billing/anycost/{connection_id}/billing_drops/{month}  read a month
  POST /v2/connections/billing/anycost/validate_billing_drop                  validate only

and checks them in the strictest reading of the documented contract: the raw API key in
Authorization (else 403), bodies of at most --max_body_bytes (else 413), every CBF row and
value (400 naming the row and column), sum / replace_hourly / replace_drop per connection and
month, at most 1,000,000 rows and 70 MB per month, one request in flight per connection (a
second one gets 429 and is counted as a concurrency violation), cloudzero-test-key namespaces.
Like CloudZero, it caches the first answer to a cloudzero-idempotency-key, errors included,
and replays it to every later request with that key (see --cache_errors)."""

EPILOG_TEMPLATE = """\
control endpoints (127.0.0.1 only, no API key):
  GET  /_emulator/stats        counters, faults, and what each connection and month holds
  POST /_emulator/configure    {{"faults": {{...}}, "latency_seconds": x, "cache_errors": true|false}}
  POST /_emulator/reset        forget data, keys, counters and the request log
  POST /_emulator/forget_keys  forget every cached idempotency-key answer
  POST /_emulator/preload      {{"connection": "c1", "month": "2024-08", "rows": 990000,
                               "cost": "0"}}: a month already holding that many rows
  python -m anycost_emulator.stats URL prints the stats as a table.

--faults fields (on create requests only; all off by default):
{fields}
  script names, one consumed per create request before any random draw:
    5xx, 503_retry_after  CloudZero's application failed: cached under the key (--cache_errors)
    front_5xx, 429        the load balancer or gateway failed: never cached
    slow, drop_after_apply  the drop is applied, then the answer is late or lost
    ok                    no fault

exit status: 0 when stopped by SIGTERM or Ctrl-C, 1 when the port cannot be listened on,
2 for a bad option or a missing API key.

example:
  CLOUDZERO_API_KEY=local-key python -m anycost_emulator --port 8787 \\
      --faults '{{"rate_5xx": 0.1, "retry_after_5xx": 1}}'
  curl -H 'Authorization: local-key' -H 'Content-Type: application/json' \\
      -d '{{"month": "2024-08", "operation": "sum", "data": [{{"time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "12"}}]}}' \\
      http://127.0.0.1:8787/v2/connections/billing/anycost/c1/billing_drops
"""


FAULT_FIELD_HELP = {
    "rate_5xx": "share of create requests CloudZero's application fails with 500/502",
    "retry_after_5xx": "seconds: those failures are 503 with this Retry-After instead",
    "rate_429": "share the gateway answers 429 with Retry-After",
    "retry_after_429": "the 429's Retry-After, in seconds",
    "rate_front_5xx": "share the load balancer answers 502/503/504",
    "retry_after_front_5xx": "seconds: those are 503 with this Retry-After instead",
    "rate_slow": "share applied and then answered only after slow_seconds",
    "slow_seconds": "how late a slow answer is",
    "rate_drop_after_apply": "share applied and then closed without an answer",
    "forbid_after_drops": "after this many applied drops, every request gets 403",
    "script": "fault names for the next create requests, in order (see below)",
}


def _fault_fields() -> str:
    lines = []
    for spec in dataclasses.fields(FaultConfig):
        default = spec.default
        if default is dataclasses.MISSING:
            default = spec.default_factory()
        lines.append(f"  {spec.name:<22} {FAULT_FIELD_HELP[spec.name]} "
                     f"(default {json.dumps(default)})")
    return "\n".join(lines)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the description's layout and show every option's default."""


def _true_or_false(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value == "true"


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m anycost_emulator", description=DESCRIPTION,
        epilog=EPILOG_TEMPLATE.format(fields=_fault_fields()), formatter_class=_Formatter)
    add = result.add_argument
    add("--port", type=int, default=0,
        help="port to listen on; 0 picks a free one (see --port_file)")
    add("--host", default=LOOPBACK, help="address to bind; only 127.0.0.1 is allowed")
    add("--api_key_env", "--api-key-env", default="CLOUDZERO_API_KEY", metavar="NAME",
        help="environment variable holding the API key that requests must send")
    add("--mode", choices=("store", "throughput"), default="store",
        help="store: validate every row and keep it; throughput: check the body's shape, "
             "count rows and the exact cost per hour, keep no rows (for benchmarks)")
    add("--cache_errors", "--cache-errors", type=_true_or_false, default="true",
        metavar="true|false",
        help="cache the first answer to an idempotency key whatever it is, errors included, as "
             "CloudZero does; false remembers only answers to parsed bodies (200 and 400)")
    add("--faults", default=None, metavar="JSON",
        help="faults to inject, as a JSON object of the fields listed below")
    add("--seed", type=int, default=0, help="seed of the random fault draws")
    add("--latency", type=float, default=0.0, metavar="SECONDS",
        help="extra time each API request takes")
    add("--max_body_bytes", "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
        metavar="BYTES", help="largest request body accepted; larger ones get 413")
    add("--parse_processes", "--parse-processes", type=int, default=1, metavar="N",
        help="throughput mode: parse up to N bodies at once, one in this process and the others on "
             "N-1 worker processes, as CloudZero serves parallel requests; 1 parses each body in "
             "its request's thread, one at a time")
    add("--port_file", "--port-file", default=None, metavar="PATH",
        help="write the bound port to this file once listening")
    return result


def _write_port_file(path: str, port: int) -> None:
    """Atomically, so a poller never reads a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def _build_from_args(args: argparse.Namespace) -> Emulator:
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ValueError(f"environment variable {args.api_key_env} is not set")
    try:
        faults = FaultConfig.from_dict(json.loads(args.faults)) if args.faults else None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--faults: {exc}") from None
    return Emulator(api_key=key, mode=args.mode, host=args.host, port=args.port,
                    latency_seconds=args.latency, faults=faults, seed=args.seed,
                    max_body_bytes=args.max_body_bytes, cache_errors=args.cache_errors,
                    parse_processes=args.parse_processes)


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        emulator = _build_from_args(args)
    except (ValueError, TypeError) as exc:
        print(f"anycost emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        emulator.start()
    except OSError as exc:  # the port is taken (another emulator?) or may not be bound
        print(f"anycost emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
              "stop what uses it, or give another --port (0 picks a free one)", file=sys.stderr)
        return 1
    with emulator:
        if args.port_file:
            _write_port_file(args.port_file, emulator.port)
        print(f"AnyCost emulator listening on {emulator.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
