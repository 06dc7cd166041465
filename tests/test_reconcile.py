"""The rule that resolves a body in doubt from CloudZero's listing: each case, and its limits."""
from anycost.bodies.packing import PlannedBody, idempotency_key
from anycost.delivery import reconcile


def body(rows=3, month="2024-08"):
    data = b'{"month":"%s"}' % month.encode()
    return PlannedBody("conn", month, "sum", 2, 4, rows, data, idempotency_key("conn", month, "sum", 2, data))


def drop(drop_id, rows, month="2024-08"):
    return {"drop_id": drop_id, "month": month, "row_count": rows}


LISTED = [drop("old-1", 50), drop("mine-1", 10), drop("old-2", 7, "2024-07")]


def test_no_unaccounted_drop_means_it_was_not_applied():
    verdict = reconcile.decide(body(), LISTED, seen={"old-1", "old-2"}, delivered_ids={"mine-1"})
    assert verdict.kind == reconcile.NOT_APPLIED and "not applied" in verdict.reason


def test_one_unaccounted_drop_with_its_rows_means_it_was_applied():
    listed = LISTED + [drop("new", 3)]
    verdict = reconcile.decide(body(rows=3), listed, seen={"old-1", "old-2"}, delivered_ids={"mine-1"})
    assert verdict == reconcile.Verdict(reconcile.APPLIED, "new", verdict.reason)
    assert "drop new" in verdict.reason


def test_a_drop_of_another_month_is_not_this_body():
    listed = LISTED + [drop("new", 3, "2024-09")]
    assert reconcile.decide(body(), listed, {"old-1", "old-2"}, {"mine-1"}).kind == reconcile.NOT_APPLIED


def test_an_unaccounted_drop_of_other_rows_cannot_be_decided():
    listed = LISTED + [drop("stranger", 4)]
    verdict = reconcile.decide(body(rows=3), listed, {"old-1", "old-2"}, {"mine-1"})
    assert verdict.kind == reconcile.UNDECIDED and "stranger (4 rows)" in verdict.reason


def test_two_bodies_in_doubt_cannot_share_one_drop():
    listed = LISTED + [drop("new", 3)]
    verdict = reconcile.decide(body(rows=3), listed, {"old-1", "old-2"}, {"mine-1"}, bodies_in_doubt=2)
    assert verdict.kind == reconcile.UNDECIDED and "2 bodies in doubt" in verdict.reason


def test_two_unaccounted_drops_cannot_be_decided():
    listed = LISTED + [drop("a", 3), drop("b", 3)]
    assert reconcile.decide(body(rows=3), listed, {"old-1", "old-2"}, {"mine-1"}).kind == reconcile.UNDECIDED


def test_without_a_listing_from_before_nothing_can_be_told():
    verdict = reconcile.decide(body(), LISTED, seen=None, delivered_ids={"mine-1"})
    assert verdict.kind == reconcile.UNDECIDED and "no listing" in verdict.reason


def test_a_delivery_without_a_drop_id_makes_an_unknown_drop_undecidable():
    listed = LISTED + [drop("new", 3)]
    verdict = reconcile.decide(body(rows=3), listed, {"old-1", "old-2"}, {"mine-1"}, unidentified_deliveries=1)
    assert verdict.kind == reconcile.UNDECIDED
    # with nothing unaccounted at all, that delivery is one of the listed ones: still undecidable
    assert reconcile.decide(body(), LISTED, {"old-1", "old-2"}, {"mine-1"},
                            unidentified_deliveries=1).kind == reconcile.UNDECIDED


# The sender, when the listing cannot decide, names the command that records the answer.

def _undecided_run(tmp_path):
    from tests.test_delivery import APPLIED_THEN_DROPPED, FRONT_502, make_body, sender
    target = make_body("2024-08", 1, count=1)
    send, _, client = sender({("2024-08", 1): [APPLIED_THEN_DROPPED, FRONT_502]}, state_path=tmp_path)
    real = client.create_drop

    def another_writer_too(connection_id, data, key):  # a drop the ledger knows nothing of
        client.drops.setdefault(connection_id, []).append({"drop_id": "stranger", "month": "2024-08",
                                                           "row_count": 9})
        return real(connection_id, data, key)
    client.create_drop = another_writer_too
    [result] = send.send([target])
    return target, result, client


def test_an_undecided_body_fails_naming_the_command_that_finishes_the_job(tmp_path):
    from pipeline import resolve
    from tests.test_delivery import sender
    target, result, client = _undecided_run(tmp_path)
    assert result.status == "failed" and "stranger (9 rows)" in result.message
    command = f"python -m pipeline.resolve --state_path {tmp_path} --connection_id conn --body {target.idempotency_key}"
    assert command + " --applied DROP_ID" in result.message and command + " --not_applied" in result.message
    assert resolve.main(["--state_path", str(tmp_path), "--connection_id", "conn", "--body",
                         target.idempotency_key, "--applied", "d-1"]) == 0
    rerun, log, _ = sender(client=client, state_path=tmp_path)
    assert [r.status for r in rerun.send([target])] == ["already_delivered"]
    assert client.applied == {("2024-08", 1): 1}


def test_not_applied_makes_the_rerun_take_the_next_key(tmp_path, capsys):
    from pipeline import resolve
    from tests.test_delivery import sender
    target, result, client = _undecided_run(tmp_path)
    assert resolve.main(["--state_path", str(tmp_path), "--connection_id", "conn", "--body",
                         target.idempotency_key, "--not_applied"]) == 0
    assert "key generation 1" in capsys.readouterr().out
    rerun, log, _ = sender(client=client, state_path=tmp_path)
    [again] = rerun.send([target])
    assert again.status == "delivered" and again.generation == 1
    assert resolve.main(["--state_path", str(tmp_path), "--connection_id", "conn", "--body", "nope",
                         "--not_applied"]) == 2
    assert "holds no body nope" in capsys.readouterr().err


def test_one_of_a_thing_is_said_in_the_singular():
    verdict = reconcile.decide(body(rows=1), LISTED + [drop("x", 1), drop("y", 1)], {"old-1", "old-2"}, {"mine-1"})
    assert "(1 row)" in verdict.reason and "1 rows" not in verdict.reason
