"""Record an operator's answer for a body in doubt that CloudZero's listing could not decide.

    python -m pipeline.resolve --state_path P --connection_id C --body IDENTITY (--applied DROP_ID | --not_applied)

A run names this command, with the body's identity filled in, when it cannot tell from the
listing whether a body was applied (another writer's drops in the month, or no listing from
before). After checking the month in CloudZero, record what is true, then rerun the same
command line: with `--applied` the body counts as delivered; with `--not_applied` it takes
its next idempotency key. Exit status 0 when recorded, 2 when the ledger holds no such body.
"""
import argparse
import sys

from anycost.delivery.ledger import RunState


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.resolve", description=__doc__.split("\n")[0])
    parser.add_argument("--state_path", required=True, help="the ledger the run used")
    parser.add_argument("--connection_id", required=True)
    parser.add_argument("--body", required=True, metavar="IDENTITY", help="the body's identity, as the run printed it")
    answer = parser.add_mutually_exclusive_group(required=True)
    answer.add_argument("--applied", metavar="DROP_ID", help="CloudZero holds the body, as this drop")
    answer.add_argument("--not_applied", action="store_true", help="CloudZero does not hold the body")
    args = parser.parse_args(argv)
    try:
        record = RunState(args.state_path).resolve(args.connection_id, args.body, args.applied)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.applied:
        print(f"recorded {args.connection_id} {record['month']} body {record['seq']} as delivered "
              f"(drop {args.applied}); run the same command again to send the rest")
    else:
        print(f"recorded {args.connection_id} {record['month']} body {record['seq']} as not applied; the next run "
              f"sends it under key generation {record['generation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
