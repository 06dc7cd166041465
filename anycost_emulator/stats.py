"""Print what a running emulator holds, per stream and month: `python -m anycost_emulator.stats URL`."""
import json
import sys
import urllib.request


def main(url):
    with urllib.request.urlopen(url.rstrip("/") + "/_emulator/stats", timeout=10) as response:
        stats = json.load(response)
    totals = stats.get("totals", {})
    print(f"{'stream':<20} {'month':<8} {'rows':>6} {'drops':>6}  cost")
    for connection, months in sorted(totals.items()):
        for month, entry in sorted(months.items()):
            print(f"{connection:<20} {month:<8} {entry['rows']:>6} {entry.get('bodies', 0):>6}  {entry['cost']}")
    print(f"concurrency violations: {stats.get('concurrency_violations')}")


if __name__ == "__main__":
    main(sys.argv[1])
