"""`python -m pipeline --watch`: run the watching job, then build the usual report.

The job (`transforms.watch._WatchAndSend`) writes one small record per file found and per
file and connection sent, under a folder next to the report. When the job ends (at
`--watch_timeout`, or when a local run is interrupted), the report is built from those
records, so it reads like a batch run's: rows, bodies and results per stream and month.
"""
import collections
import json
import logging

from apache_beam.io.filesystems import FileSystems

from anycost import delivery
from anycost.bodies import packing
from anycost.inputs import values
from anycost.outcomes import report as run_report
from transforms.watch import FILES_DIR, UNITS_DIR, _WatchAndSend

LOG = logging.getLogger("cloudzero")


def results_dir_for(report_target, run_id):
    """A folder next to the report, of this run only: `<report>-watch-<run id>`."""
    stem = report_target[:-len(".json")] if report_target.endswith(".json") else report_target
    return f"{stem}-watch-{run_id}"


def _records(folder):
    try:
        matches = FileSystems.match([FileSystems.join(folder, "*.json")])[0].metadata_list
    except Exception:  # pylint: disable=broad-except  # nothing written yet
        return []
    records = []
    for metadata in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(metadata.path) as handle:
            records.append(json.loads(handle.read()))
    return records


def _merged_summaries(plans):
    """Month plans of many files as one per (connection, month): rows, bytes, cost add up."""
    merged = collections.OrderedDict()
    for plan in plans:
        key = (plan["connection_id"], plan["month"])
        if key not in merged:
            merged[key] = dict(plan)
            continue
        entry = merged[key]
        for field in ("row_count", "row_bytes", "body_count", "body_bytes"):
            entry[field] += plan[field]
        entry["cost_total"] = values.decimal_text(values.exact_sum([entry["cost_total"], plan["cost_total"]]))
        entry["refused"] = entry["refused"] or plan["refused"]
    return [packing.StreamMonthPlan(e["connection_id"], e["month"], e["row_count"], e["row_bytes"],
                                    e["cost_total"], [], e["refused"], e["body_count"], e["body_bytes"])
            for e in merged.values()]


def build_report(config, results_dir):
    """The run report from the records the job wrote: exit 0 only when every file found
    was delivered (or had been, by an earlier watcher with the same --state_path)."""
    found = _records(FileSystems.join(results_dir, FILES_DIR))
    units = _records(FileSystems.join(results_dir, UNITS_DIR))
    stats = (sum(f["rows_read"] for f in found), sum(f["rows_rejected"] for f in found),
             sum(1 for f in found if f["file_error"]))
    summaries = _merged_summaries([plan for unit in units for plan in unit["plans"]])
    results = [delivery.from_record(result) for unit in units for result in unit["results"]]
    report = run_report.build(config, stats, summaries, results,
                              [f["dead_letter"] for f in found if f["dead_letter"]],
                              [f["file_error"] for f in found if f["file_error"]], gated_per_unit=True)
    report["files_found"] = [f["path"] for f in found]
    report["files_held"] = {f["path"]: f["held"] for f in found if f["held"]}
    return report


def build(p, config, dead_letter_prefix, results_dir):
    """Add the watching job to pipeline `p`."""
    return p | "Watch" >> _WatchAndSend(config, dead_letter_prefix, results_dir)


def finish(config, results_dir, report_target):
    """Write the report next to where the batch run writes it, and return it."""
    report = build_report(config, results_dir)
    with FileSystems.create(report_target) as handle:
        handle.write(json.dumps(report, indent=2, sort_keys=False).encode())
    lines = [run_report.render(report), f"files found: {len(report['files_found'])}"]
    lines += [f"file held back: {reason}" for reason in report["files_held"].values()]
    return report, "\n".join(lines)
