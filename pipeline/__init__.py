"""CloudZero AnyCost Stream connector: Common Bill Format files to billing drops.

Pure modules (no Beam, no HTTP): cbf, values, typed_text, normalise, chunking, readers, packing,
retry, delivery, verify, report, config. Edges: anycost_client (HTTP), api_key (environment,
Secret Manager), run_state and files (Beam filesystems), graph and main (the Beam program).
"""
