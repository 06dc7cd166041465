"""The core of the CloudZero AnyCost Stream connector; it imports neither Beam transforms nor the CLI.

Pure modules (no Beam, no HTTP): cbf, values, typed_text, rows, normalise, chunking, readers, packing,
retry, delivery, verify, report, config. Edges: client (HTTP), api_key (environment, Secret
Manager), run_state and files (Beam filesystems only).
"""
