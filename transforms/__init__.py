"""The CloudZero AnyCost connector's Beam API.

`WriteToAnyCost` delivers rows from any pipeline (dicts or Arrow record batches) and returns
a `WriteToAnyCostResult` (`delivered`, `failed`, `rejected`); `ReadCbf` reads Common Bill
Format files. The pure logic they run lives in `anycost`.
"""
from transforms.read import ReadCbf
from transforms.result import WriteToAnyCostResult
from transforms.write import WriteToAnyCost

__all__ = ["WriteToAnyCost", "ReadCbf", "WriteToAnyCostResult"]
