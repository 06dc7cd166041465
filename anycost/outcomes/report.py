"""The run report: what was read, rejected, planned and delivered, per stream and month.

Built from small records the pipeline collects (counts, month summaries, body results),
written as JSON and printed as a table. The exit status is derived from it, so the
table a person reads and the status an orchestrator sees can never disagree.
No Beam, no HTTP.
"""
import collections
import typing

from anycost import config as run_config, delivery, words
from anycost.delivery.results import COSTED
from anycost.inputs import normalise, values
from anycost.outcomes import notices

GOOD_MONTH_STATUSES = {"delivered", "dry_run", "valid", "verified"}
IN_CLOUDZERO = frozenset({delivery.DELIVERED, delivery.ALREADY_DELIVERED})


def gate_reason(rejected, file_errors, summaries, config):
    """Why nothing at all may be posted, or None: checked after the whole input is validated,
    from the rows rejected and the files that broke part-way."""
    return hold_reason(rejected, summaries, config, [file_error_hold(file_errors)] if file_errors else [])


class BundleTally(typing.NamedTuple):
    """What one bundle of the write met that may hold every POST back."""
    rejected: int  # rows rejected
    file_errors: int  # input files that broke part-way


def file_error_hold(file_errors):
    """The hold reason when files broke part-way: their rows are incomplete."""
    return (f"{file_errors} input file(s) could not be read to the end, so their rows are "
            "incomplete; nothing was posted")


def hold_reason(rows_rejected, summaries, settings, holds=()):
    """The write path's gate: why nothing at all may be posted, or None. `holds` are reasons
    of the caller's (a file that broke part-way); messages name settings as the user gave them."""
    if holds:
        return "; ".join(sorted(holds))
    if rows_rejected > settings.max_rejected_rows:
        where = "the dead-letter files" if settings.face == run_config.CLI else "result.rejected"
        return (f"{words.plural(rows_rejected, 'row')} {'was' if rows_rejected == 1 else 'were'} rejected, more than "
                f"{run_config.setting_value('max_rejected_rows', settings.max_rejected_rows, settings.face)}; "
                f"nothing was posted. Fix the rows in {where} and run again")
    refused = sorted((s for s in summaries if s.refused), key=lambda s: (s.connection_id, s.month))
    if refused and settings.operation != "sum":
        first = refused[0]
        return (f"{settings.operation}: {first.connection_id} {first.month} was refused ({first.refused}); "
                "nothing was posted")
    return None


def _month_status(entry, gate):
    counts = entry["counts"]
    if entry["refused"] or counts.get(delivery.REFUSED):
        return "refused"
    if entry.get("verify") and entry["verify"]["status"] != "match":
        return "verify_failed"
    if counts.get(delivery.FAILED):
        return "failed"
    if counts.get(delivery.INVALID):
        return "invalid"
    if counts.get(delivery.NOT_SENT) or gate:
        return "not_sent"
    for status in (delivery.DRY_RUN, delivery.VALID):
        if counts.get(status):
            return status
    if entry.get("verify"):
        return "verified"
    return "delivered"


def build(config, stats, summaries, results, dead_letter_files=(), file_errors=(), verifications=(),
          input_rules=None, reject_reasons=(), gated_per_unit=False):
    """The report as a JSON-able dict; `ok` says whether the run did everything it should.
    `gated_per_unit`: the sender held back each unit (a watched file) over the limits on its
    own, and the held units are in `results` as not sent, so there is no run-wide gate."""
    rows_read, rows_rejected, file_error_count = stats
    gate = None if gated_per_unit else gate_reason(rows_rejected, file_error_count, summaries, config)
    streams = collections.defaultdict(dict)
    for summary in sorted(summaries, key=lambda s: (s.connection_id, s.month)):
        streams[summary.connection_id][summary.month] = {
            "rows": summary.row_count, "bodies": summary.body_count, "bytes": summary.body_bytes,
            "cost": summary.cost_total,
            "refused": summary.refused, "counts": collections.Counter(), "messages": [], "drop_ids": [],
        }
        if getattr(summary, "resource_ids_cut", 0):
            streams[summary.connection_id][summary.month]["resource_ids_cut"] = {
                "rows": summary.resource_ids_cut, "example": summary.resource_id_example,
                "message": notices.resource_id_notice(summary.resource_ids_cut, summary.resource_id_example)}
    for result in sorted(results, key=lambda r: (r.connection_id, r.month, r.seq)):
        entry = streams[result.connection_id][result.month]
        entry["counts"][result.status] += 1
        if result.status in COSTED:
            entry.setdefault("undelivered", []).append(result)
        if result.drop_id:
            entry["drop_ids"].append(result.drop_id)
        if result.message and result.message not in entry["messages"] and result.status != delivery.ALREADY_DELIVERED:
            entry["messages"].append(result.message)
        if result.key_moves:
            entry.setdefault("key_moves", []).extend(f"body {result.seq}/{result.count}: {move}"
                                                     for move in result.key_moves)
    for check in verifications:
        streams[check["connection_id"]].setdefault(check["month"], {
            "rows": 0, "bodies": 0, "bytes": 0, "cost": "0", "refused": None,
            "counts": collections.Counter(), "messages": [], "drop_ids": []})["verify"] = check

    for months in streams.values():
        for entry in months.values():
            entry["status"] = _month_status(entry, gate)
            _split_partly_delivered(entry)
            if entry["refused"]:
                entry["messages"].insert(0, entry["refused"])
            entry["counts"] = dict(entry["counts"])
            del entry["refused"]

    delivered = [r for r in results if r.status == delivery.DELIVERED]
    report = {
        "mode": config.mode,
        "operation": config.operation,
        "rows_read": rows_read,
        "rows_rejected": rows_rejected,
        "max_rejected_rows": config.max_rejected_rows,
        "file_errors": list(file_errors),
        "dead_letter_files": sorted(dead_letter_files),
        "reject_reasons": list(reject_reasons),
        "blocked": gate,
        "bodies_planned": sum(s.body_count for s in summaries),
        "bodies_sent": len(delivered),
        "bytes_sent": sum(r.bytes for r in delivered),
        "bodies_already_delivered": sum(r.status == delivery.ALREADY_DELIVERED for r in results),
        "bodies_failed": sum(r.status == delivery.FAILED for r in results),
        "bodies_not_sent": sum(r.status == delivery.NOT_SENT for r in results),
        "bodies_moved_to_a_new_key": sum(bool(r.key_moves) for r in results),
        "month_check": _month_check(config),
        "state_path": getattr(config, "state_path", None),  # the delivery ledger a rerun resumes from
        "streams": {conn: dict(sorted(months.items())) for conn, months in sorted(streams.items())},
        "input_format": getattr(config, "input_format", "cbf"),
        "dropped_columns": list(getattr(config, "dropped_columns", ())),
        "input_rules": dict(input_rules or {}),
        "warnings": list(getattr(config, "input_warnings", ())),
    }
    month_ok = all(entry["status"] in GOOD_MONTH_STATUSES
                   for months in streams.values() for entry in months.values())
    report["ok"] = gate is None and not file_error_count and month_ok
    return report


def _split_partly_delivered(entry):
    """A month that is partly in CloudZero gets `delivered_part` and `undelivered_part`
    (bodies, rows, bytes, exact cost), so nobody re-sends the whole month to fix the rest.
    The delivered part is the month less what was not delivered: the two add up exactly."""
    undelivered = entry.pop("undelivered", [])
    delivered_bodies = sum(entry["counts"].get(status, 0) for status in IN_CLOUDZERO)
    if not (undelivered and delivered_bodies) or any(r.cost is None for r in undelivered):
        return
    rows, size = sum(r.rows for r in undelivered), sum(r.bytes for r in undelivered)
    cost = values.exact_sum(r.cost for r in undelivered)
    entry["undelivered_part"] = {"bodies": len(undelivered), "rows": rows, "bytes": size,
                                 "cost": values.decimal_text(cost)}
    entry["delivered_part"] = {"bodies": delivered_bodies, "rows": entry["rows"] - rows, "bytes": entry["bytes"] - size,
                               "cost": values.decimal_text(values.exact_sum([entry["cost"], -cost]))}


def _month_check(config):
    """Whether `sum` months were checked against the rows CloudZero already holds."""
    if config.mode != run_config.SEND or config.operation != "sum":
        return "not needed"
    return f"skipped ({run_config.setting_on('skip_month_check', config.face)})" if config.skip_month_check else "checked"


def exit_code(report):
    return 0 if report["ok"] else 1


def _reasons(reasons):
    """The most frequent reasons rows were rejected, each with a count and one example."""
    if not reasons:
        return []
    lines = ["most frequent reasons rows were rejected:"]
    width = max(len(f"{entry['count']:,}") for entry in reasons)
    for entry in reasons:
        lines.append(f"  {entry['count']:>{width},}  {entry['reason']}")
        example = entry.get("example")
        if example:
            where = f"{example['file']} row {example['row']}"
            value = f": {example['column']} = {example['value']!r}" if example.get("column") else ""
            lines.append(f"  {'':>{width}}  e.g. {where}{value}")
    return lines


def _table_row(conn, month, part, result):
    return (conn, month, f"{part['rows']:,}", f"{part['bodies']:,}", f"{part['bytes']:,}", part["cost"], result)


def _without_status_words(status, message):
    """A message that opens with its own status ("not sent: ...") after that status, once."""
    words = status.replace("_", " ") + ": "
    return message[len(words):] if message.startswith(words) else message


def render(report):
    """The report as a table a person reads at the end of the run."""
    lines = [f"CloudZero AnyCost Stream: {report['mode']}, operation {report['operation']}"]
    header = ("stream", "month", "rows", "bodies", "bytes", "cost", "result")
    table = [header]
    for conn, months in report["streams"].items():
        for month, entry in months.items():
            result = entry["status"]
            if entry.get("verify"):
                check = entry["verify"]
                result += (f" (CloudZero holds {check['actual_rows']} rows, cost {check['actual_cost']}; "
                           f"expected {check['expected_rows']}, {check['expected_cost']})")
            if entry["messages"] and entry["status"] not in GOOD_MONTH_STATUSES:
                result += ": " + _without_status_words(entry["status"], entry["messages"][0])
            if "delivered_part" in entry:  # one line for what is in CloudZero, one for the rest
                table.append(_table_row(conn, month, entry["delivered_part"], "delivered (this part is in CloudZero)"))
                table.append(_table_row(conn, month, entry["undelivered_part"], result))
            else:
                table.append(_table_row(conn, month, entry, result))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    lines.append(f"rows read {report['rows_read']:,} | rows rejected {report['rows_rejected']:,} | "
                 f"bodies sent {report['bodies_sent']:,} | bytes sent {report['bytes_sent']:,}"
                 + (f" | already delivered {report['bodies_already_delivered']:,}"
                    if report["bodies_already_delivered"] else ""))
    if report["rows_read"] == 0 and not report["file_errors"]:
        lines.append("the input holds no rows; nothing was sent")
    for message in report["file_errors"]:
        lines.append(f"file error: {message}")
    for message in report.get("warnings", ()):
        lines.append(f"warning: {message}")
    dropped = report.get("dropped_columns") or []
    if dropped:
        shown = ", ".join(dropped[:12]) + (f" and {len(dropped) - 12} more" if len(dropped) > 12 else "")
        lines.append(f"columns left out: {shown}")
    if report.get("input_rules"):
        lines.append("input rules applied: " + ", ".join(f"{k} {v:,}" for k, v in report["input_rules"].items()))
    if report["rows_rejected"]:
        lines.extend(_reasons(report.get("reject_reasons") or []))
        files = ", ".join(report["dead_letter_files"]) or "(no dead-letter files were written)"
        lines.append(f"rejected rows are in: {files}")
    if report.get("bodies_moved_to_a_new_key"):
        first = next(f"{conn} {month} {entry['key_moves'][0]}" for conn, months in report["streams"].items()
                     for month, entry in months.items() if entry.get("key_moves"))
        lines.append(f"{report['bodies_moved_to_a_new_key']:,} bodies moved to a new idempotency key after "
                     f"definite errors (key_moves in the JSON report), e.g. {first}")
    cut = [(conn, month, entry["resource_ids_cut"]) for conn, months in report["streams"].items()
           for month, entry in months.items() if entry.get("resource_ids_cut")]
    if cut:
        conn, month, first = cut[0]
        total = sum(entry["rows"] for _, _, entry in cut)
        lines.append(f"note: {notices.resource_id_notice(total, first['example'])} "
                     f"(first in {conn} {month}; per month in the JSON report)")
    if report.get("month_check", "").startswith("skipped"):
        lines.append("monthly row limits were not checked against what CloudZero already holds "
                     f"({run_config.setting_on('skip_month_check', run_config.CLI)})")
    if report["blocked"]:
        lines.append(f"NOTHING POSTED: {report['blocked']}")
    lines.append("result: OK" if report["ok"] else "result: FAILED (see the lines above)")
    return "\n".join(lines)
