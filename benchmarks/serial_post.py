"""POST a directory of ready bodies one after another: the serial baseline of `run.py --streams`.

    CLOUDZERO_API_KEY=... python -m benchmarks.serial_post --bodies DIR --api_url http://127.0.0.1:PORT

DIR is what `python -m pipeline --dry_run --output_dir DIR` writes: DIR/<connection>/<month>/<seq>.json.
Bodies go out in (connection, month, seq) order over one keep-alive session, never two at a time,
so the time is the sum of the request latencies: what a script that does not overlap streams pays.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import requests

API_PREFIX = "/v2/connections/billing/anycost"


def body_files(root):
    """[(connection, month, path)] in sending order."""
    found = []
    for connection in sorted(os.listdir(root)):
        for month in sorted(os.listdir(os.path.join(root, connection))):
            folder = os.path.join(root, connection, month)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".json"):
                    found.append((connection, month, os.path.join(folder, name)))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serial_post", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", required=True)
    parser.add_argument("--api_url", required=True)
    args = parser.parse_args(argv)
    key = os.environ.get("CLOUDZERO_API_KEY")
    if not key:
        print("error: set CLOUDZERO_API_KEY", file=sys.stderr)
        return 2
    started = time.monotonic()
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"Authorization": key, "Content-Type": "application/json"})
    base = args.api_url.rstrip("/") + API_PREFIX
    sent = 0
    for connection, month, path in body_files(args.bodies):
        with open(path, "rb") as handle:
            body = handle.read()
        idempotency = hashlib.sha256(f"{connection}|{month}|{os.path.basename(path)}|".encode() + body).hexdigest()
        response = session.post(f"{base}/{connection}/billing_drops", data=body, timeout=(10, 300),
                                headers={"cloudzero-idempotency-key": idempotency})
        if response.status_code != 200:
            print(f"error: {path}: HTTP {response.status_code} {response.text[:300]}", file=sys.stderr)
            return 1
        sent += 1
    session.close()
    print(json.dumps({"contender": "serial-post", "bodies": sent,
                      "seconds": round(time.monotonic() - started, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
