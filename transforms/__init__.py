"""The CloudZero AnyCost connector's Beam API.

`WriteToAnyCost` delivers rows from any pipeline (dicts or Arrow record batches) and returns
a `WriteToAnyCostResult` (`delivered`, `failed`, `rejected`); `ReadCbf` reads Common Bill
Format files; `AggregateHourly` merges usage rows per connection and UTC hour before the
write. The pure logic they run lives in `anycost`.
"""
from transforms.aggregate import AggregateHourly
from transforms.read import ReadCbf
from transforms.result import WriteToAnyCostResult
from transforms.write import WriteToAnyCost

__all__ = ["WriteToAnyCost", "AggregateHourly", "ReadCbf", "WriteToAnyCostResult"]
