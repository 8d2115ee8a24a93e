"""Row outcomes: a settled chunk's outcomes live in one item (OUT#<first row>), rejected and
filled-in rows and webhook phonon-uuids in row items; the report and the webhook read both.
Given/When/Then, against moto built from template.yaml."""

from __future__ import annotations

import base64
import json

import boto3
import pytest

from phonon_outbound import wiring
from phonon_outbound.jobs import WEBHOOK_ONLY_REASON

from .conftest import Ctx, csv_rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def outcome(row: int, status: str = "ACCEPTED", **extra) -> dict:
    return {"row": row, "status": status, "cid": f"C{row}", "request_id": "req-1" if status == "ACCEPTED" else "",
            "numbers": [f"+9198000000{row:02d}"], **extra}


def push(h, ref: str, uuid: str) -> dict:
    """A flow-end push through the real webhook handler, with the stack's own credentials."""
    import webhook_handler

    creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=h.env["WEBHOOK_SECRET_NAME"])["SecretString"])
    event = json.loads((h.stack.root / "events" / "webhook-flow-end.json").read_text())
    event["body"] = json.dumps({"phonon-uuid": uuid, "keys": [{"name": "$flow.key.OutboundRef", "value": ref}],
                                "callDetails": [{"duration": "9"}]})
    event["headers"]["authorization"] = "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()
    resp = webhook_handler.handler(event, Ctx("webhook"))
    assert resp["statusCode"] == 200
    return json.loads(resp["body"]) if resp.get("body") else {}


def test_given_chunk_outcomes_and_row_items_then_every_row_is_read_once_in_row_order(make_harness):
    make_harness()
    store = wiring.store()
    # Given chunk 0 (rows 2, 3, 5) and chunk 1 (rows 6, 8) settled, rows 1, 4, 7 rejected by
    # ingest, row 6 filled in as "not sent" by an aborted run, and a webhook's uuid for row 3
    store.rows.put_outcomes("J1", 0, [outcome(5), outcome(2), outcome(3, "DUPLICATE", reason="dup of x")], at=1)
    store.rows.put_outcomes("J1", 1, [outcome(6), outcome(8, "FAILED", reason="HTTP 400")], at=1)
    store.rows.put_rows("J1", [{"row": r, "status": "REJECTED", "reason": "bad phone"} for r in (1, 4, 7)])
    store.rows.put_rows("J1", [{"row": 6, "status": "FAILED", "reason": "not sent: aborted"}])
    store.rows.set_row_uuid("J1", 2, "uuid-2")
    # When the outcomes are read
    rows = list(store.rows.iter_outcomes("J1"))
    # Then each row once, in order, the chunk's outcome winning over a filled-in row item, the
    # webhook's uuid added to the chunk's outcome
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["status"] for r in rows] == ["REJECTED", "ACCEPTED", "DUPLICATE", "REJECTED", "ACCEPTED", "ACCEPTED",
                                           "REJECTED", "FAILED"]
    assert rows[1]["phonon_uuid"] == "uuid-2" and rows[1]["cid"] == "C2" and rows[1]["numbers"] == ["+919800000002"]
    assert rows[2]["reason"] == "dup of x" and rows[7]["reason"] == "HTTP 400"
    assert "phonon_uuid" not in rows[4]


def test_given_a_bare_row_key_mid_update_then_readers_take_it_for_nothing_yet(make_harness):
    """moto's UpdateItem puts a new item's bare key before applying its SET, so a report read
    while a webhook records a row's outcome can meet an item with only pk and sk."""
    from phonon_outbound.store.common import job_pk, row_sk

    make_harness()
    store = wiring.store()
    store.rows.put_outcomes("J5", 0, [outcome(1), outcome(2), outcome(3)], at=1)
    for row in (2, 9):
        store.rows.table.put_item(Item={"pk": job_pk("J5"), "sk": row_sk(row)})
    assert [(r["row"], r["status"]) for r in store.rows.iter_outcomes("J5")] == [
        (1, "ACCEPTED"), (2, "ACCEPTED"), (3, "ACCEPTED")]
    assert store.rows.get_outcome("J5", 2)["cid"] == "C2"
    assert store.rows.get_outcome("J5", 9) is None


def test_given_a_chunk_outcome_item_then_a_row_finds_its_chunk_and_other_rows_do_not(make_harness):
    make_harness()
    store = wiring.store()
    store.rows.put_outcomes("J2", 0, [outcome(2), outcome(5)], at=1)
    store.rows.put_outcomes("J2", 1, [outcome(9)], at=1)
    assert store.rows.find_outcome("J2", 5)["chunk"] == 0
    assert store.rows.find_outcome("J2", 2)["chunk"] == 0
    assert store.rows.find_outcome("J2", 9)["chunk"] == 1
    assert store.rows.find_outcome("J2", 1) is None  # before the first chunk
    assert store.rows.find_outcome("J2", 7) is None  # between chunk 0's last row and chunk 1
    assert store.rows.find_outcome("J2", 10) is None
    assert store.rows.find_outcome("other-job", 5) is None


def test_given_outcomes_too_big_for_one_item_then_they_fall_back_to_row_items(make_harness, monkeypatch):
    make_harness()
    store = wiring.store()
    store.rows.max_blob = 10
    store.rows.put_outcomes("J3", 4, [outcome(1), outcome(2, "FAILED", reason="x")], at=7)
    assert store.rows.find_outcome("J3", 1) is None
    assert [(r["row"], r["status"], r["chunk"]) for r in store.rows.iter_rows("J3")] == [(1, "ACCEPTED", 4),
                                                                                      (2, "FAILED", 4)]
    assert [r["status"] for r in store.rows.iter_outcomes("J3")] == ["ACCEPTED", "FAILED"]


def test_given_a_webhook_before_its_chunk_settles_then_the_report_still_carries_its_phonon_uuid(make_harness):
    h = make_harness()
    obj = h.upload("early.csv", csv_rows(3))
    h.ingest(obj)
    # When Phonon's flow-end push for row 2 arrives before the dispatcher recorded its answer
    assert push(h, f"{obj.job_id}.2", "early-uuid-2")["matched"] is True
    early = wiring.store().results.get_result("early-uuid-2")
    assert early["job"] == obj.job_id and early["row"] == 2 and early["file"] == obj.key
    assert "client-identifier" not in early  # not known yet
    # Then, once the chunk settles, the report has the webhook's uuid on row 2 and the answer's request-id
    h.drain()
    report = h.report(obj)
    assert [r["status"] for r in report] == ["ACCEPTED"] * 3
    assert report[1]["phonon-uuid"] == "early-uuid-2" and report[1]["request-id"]
    assert report[0]["phonon-uuid"] == "" and report[2]["phonon-uuid"] == ""
    # and a later push for a settled row takes the row's facts from its chunk's outcome item
    push(h, f"{obj.job_id}.3", "late-uuid-3")
    late = wiring.store().results.get_result("late-uuid-3")
    assert late["client-identifier"] == "C-000002" and late["request-id"] == report[2]["request-id"]
    assert late["numbers"] == ["919800000002"]  # as sent to Phonon


def test_given_a_push_for_an_unknown_job_then_it_is_kept_as_unmatched(make_harness):
    h = make_harness()
    assert push(h, "nosuchjob.4", "stray-uuid")["matched"] is False
    item = wiring.store().results.get_result("stray-uuid")
    assert item["unmatched"] is True and item["ref"] == "nosuchjob.4"
    assert list(wiring.store().rows.iter_rows("nosuchjob")) == []  # no row item invented for it


def test_given_an_aborted_run_then_a_row_known_only_from_its_webhook_is_reported_accepted(make_harness):
    h = make_harness()
    obj = h.upload("aborted.csv", csv_rows(3))
    h.ingest(obj)
    # Given the chunk was sent but its answer never recorded, and Phonon pushed row 1's flow end
    push(h, f"{obj.job_id}.1", "only-from-webhook")
    # When the run is stopped and the report written with the rows that have no outcome
    wiring.finisher().finalize(obj.job_id, force=True, missing_reason="not sent: run stopped")
    report = h.report(obj)
    assert [(r["status"], r["phonon-uuid"], r["reason"]) for r in report] == [
        ("ACCEPTED", "only-from-webhook", WEBHOOK_ONLY_REASON),
        ("FAILED", "", "not sent: run stopped"),
        ("FAILED", "", "not sent: run stopped")]


def test_given_a_push_naming_a_row_the_file_does_not_have_then_no_row_is_invented(make_harness):
    h = make_harness()
    obj = h.upload("three.csv", csv_rows(3))
    h.ingest(obj)
    h.drain()
    # When pushes name row 0 and row 4 of a 3-row file
    assert push(h, f"{obj.job_id}.4", "beyond-uuid")["matched"] is False
    assert push(h, f"{obj.job_id}.0", "zero-uuid")["matched"] is False
    # Then they are kept as unmatched, and the report (rewritten) still has exactly its 3 rows
    assert wiring.store().results.get_result("beyond-uuid")["unmatched"] is True
    assert [r["row"] for r in wiring.store().rows.iter_rows(obj.job_id)] == []
    # and even a stray row item past the file's end does not stretch the report
    wiring.store().rows.set_row_uuid(obj.job_id, 9, "stray-row-item")
    wiring.finisher().finalize(obj.job_id, force=True)
    assert [r["row"] for r in h.report(obj)] == ["1", "2", "3"]


def test_given_outcomes_that_fall_back_to_row_items_then_an_earlier_webhook_uuid_is_kept(make_harness, monkeypatch):
    make_harness()
    store = wiring.store()
    store.rows.set_row_uuid("J4", 1, "pushed-early")  # the flow-end push came before the chunk settled
    store.rows.max_blob = 10
    store.rows.put_outcomes("J4", 0, [outcome(1), outcome(2)], at=3)
    rows = list(store.rows.iter_outcomes("J4"))
    assert [(r["row"], r["status"], r.get("phonon_uuid", "")) for r in rows] == [
        (1, "ACCEPTED", "pushed-early"), (2, "ACCEPTED", "")]


def test_given_a_push_whose_row_is_not_a_plain_number_then_it_is_unmatched_not_a_crash(make_harness):
    h = make_harness()
    obj = h.upload("odd.csv", csv_rows(2))
    h.ingest(obj)
    for i, row in enumerate(("²", "1" * 5000, "-1", "")):
        assert push(h, f"{obj.job_id}.{row}", f"odd-{i}")["matched"] is False
