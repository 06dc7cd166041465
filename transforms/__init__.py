"""The CloudZero AnyCost connector's Beam API: what `__all__` names is public.

`ReadCbf` reads Common Bill Format (or FOCUS) files as `CbfBatch` elements;
`WriteToAnyCost` delivers those, or rows from any pipeline (dicts, `beam.Row`s, Arrow
record batches), and returns a `WriteToAnyCostResult` (`delivered`, `failed`, `rejected`,
...); `AggregateHourly` merges usage rows per connection and UTC hour before the write.
`Operation` and `InputFormat` name the values of `operation=` and `input_format=`.
Everything else in this package is internal; the pure logic they run lives in `anycost`.
"""
from transforms.aggregate import AggregateHourly
from transforms.batch import CbfBatch
from transforms.constants import InputFormat, Operation
from transforms.read import ReadCbf
from transforms.result import WriteToAnyCostResult
from transforms.write import WriteToAnyCost

__all__ = ["WriteToAnyCost", "WriteToAnyCostResult", "ReadCbf", "CbfBatch", "AggregateHourly",
           "Operation", "InputFormat"]
