"""The command line: `python -m pipeline` builds the file pipeline from the public transforms.

Imports run one way: `pipeline` (command line, graph) -> `transforms` (the public Beam API)
-> `anycost` (the core: CBF rules, rendering, packing, retry, delivery, HTTP, ledger).
"""
