"""The core of the CloudZero AnyCost Stream connector; it imports neither Beam transforms nor the CLI.

Grouped by the flow, each stage importing only earlier ones (tests/test_layering.py):
- foundation: `cbf` (the format's rules), `config` (run settings), `wire` (body framing);
- `inputs/`: files and rows to validated CBF text, rejects and chunks;
- `bodies/`: CBF text to request bodies under the size limit;
- `delivery/`: the client, retry policy, ledger and the sender of one connection;
- `outcomes/`: the report, progress lines and notices.

Pure modules have no Beam and no HTTP. Edges: `delivery.client` (HTTP), `delivery.api_key`
(environment, Secret Manager), `delivery.ledger` and `inputs.files` (Beam filesystems only).
"""
