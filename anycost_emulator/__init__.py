"""A local stand-in for CloudZero's AnyCost Stream API: `python -m anycost_emulator --help`.

It validates bodies by its own reading of the CBF rules (independent of the connector's `anycost`
package, so that one cannot hide the other's mistakes), stores drops per connection and month,
replays answers to idempotency keys, and injects faults on request.
"""
from anycost_emulator.emulator import Emulator, FaultConfig, RequestRecord, validate_body

__all__ = ["Emulator", "FaultConfig", "RequestRecord", "validate_body"]
