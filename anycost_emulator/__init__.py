"""A local stand-in for CloudZero's AnyCost Stream API: `python -m anycost_emulator --help`.

It validates bodies by its own reading of the CBF rules (independent of the connector's `anycost`
package, so that one cannot hide the other's mistakes), stores drops per connection and month,
caches the first answer to each idempotency key as CloudZero does, and injects faults on request.

Modules, one job each: `rules` (the CBF rules it enforces), `store` (what it holds, the monthly
limits), `keys` (the idempotency-key cache), `faults` (fault injection), `wire` (the values
between server and emulator), `server` (HTTP), `emulator` (the application and its state),
`cli` (the command line), `stats` (a running emulator's totals as a table).
"""
from anycost_emulator.emulator import Emulator
from anycost_emulator.faults import FaultConfig
from anycost_emulator.rules import validate_body
from anycost_emulator.wire import RequestRecord

__all__ = ["Emulator", "FaultConfig", "RequestRecord", "validate_body"]
