"""The suppression list through the real handlers (moto from template.yaml, the simulator over
HTTP): filled by a suppress/ file, an EventBridge event and a webhook opt-out; held back at
ingest and again right before sending; never a plain number in its table."""

from __future__ import annotations

import json
import time

import boto3

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.status import Status
from phonon_outbound.suppress_intake import DETAIL_TYPE

from .conftest import Ctx, csv_rows, statuses


def number(i: int) -> str:
    """The E.164 digits of csv_rows' row i (0-based): 98{i:08d} in India."""
    return f"9198{i:08d}"


def put_suppress_file(h, key: str, text: str, metadata: dict | None = None) -> dict:
    import ingest_handler

    put = h.s3.put_object(Bucket=h.bucket, Key=key, Body=text.encode(), Metadata=metadata or {})
    obj = ObjectRef(h.bucket, key, put.get("VersionId"), put.get("ETag"), len(text))
    return ingest_handler.handler(h.s3_event(obj), Ctx("ingest"))


def request_event(h, detail: dict) -> dict:
    import ingest_handler

    event = {"version": "0", "id": "e1", "detail-type": DETAIL_TYPE, "source": "crm.optouts",
             "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1",
             "resources": [], "detail": detail}
    return ingest_handler.handler(event, Ctx("ingest"))


def scan_dump(h) -> str:
    table = h.env["SUPPRESSION_TABLE"]
    return json.dumps(boto3.client("dynamodb", region_name="us-east-1").scan(TableName=table)["Items"])


def test_suppressed_before_and_during_a_run_are_never_sent_after_they_were_added(make_harness):
    h = make_harness(batch_size=20)
    # 100 numbers before the run, from a file under suppress/ in mixed writings
    lines = ["phone"] + [(f"+91 98{i:08d}" if i % 3 == 0 else f"098{i:08d}" if i % 3 == 1 else f"98{i:08d}")
                         for i in range(100)]
    out = put_suppress_file(h, "suppress/dnc.csv", "\n".join(lines) + "\n")
    added = out["files"][0]
    assert added["entries"] == 100 and added["action"] == "add"
    report = json.loads(h.s3.get_object(Bucket=h.bucket, Key=added["report"])["Body"].read())
    assert report["entries"] == 100 and report["rows"] == 100

    obj = h.upload("campaign.csv", csv_rows(500))
    h.ingest(obj)
    assert h.sim.stats()["requests"] == 0
    # part of the run goes out, then 50 more numbers arrive by an EventBridge event
    for _ in range(3):
        h.dispatch(h.receive(2))
    sent_before = {c["contact-numbers"][0] for c in h.sim.accepted_calls()}
    assert 0 < len(sent_before) < 400
    late = [i for i in range(100, 500) if number(i) not in sent_before][-50:]
    assert len(late) == 50
    result = request_event(h, {"action": "add", "numbers": [f"+{number(i)}" for i in late]})
    added_at = time.time()
    assert result["files"][0]["entries"] == 50
    h.drain()

    calls = h.sim.accepted_calls()
    by_number = {c["contact-numbers"][0]: c for c in calls}
    for i in range(100):
        assert number(i) not in by_number
    for i in late:  # none of them reached the simulator after they were added
        assert number(i) not in by_number or by_number[number(i)]["accepted-at"] < added_at
    rows = h.report(obj)
    for i in range(100):
        r = rows[i]
        assert r["status"] == Status.SUPPRESSED and "file suppress/dnc.csv" in r["reason"]
        assert "98" + f"{i:08d}" not in r["reason"]
    for i in late:
        r = rows[i]
        assert r["status"] == Status.SUPPRESSED and "event from crm.optouts" in r["reason"], r
    assert statuses(rows) == {"ACCEPTED": 350, "SUPPRESSED": 150}
    summary = h.summary(obj)
    assert summary["suppressed"] == 150 and summary["accepted"] == 350
    assert h.dlq_depth() == 0
    # the hashed list: no number in any writing anywhere in the table
    dump = scan_dump(h)
    for i in (*range(100), *late):
        for plain in (number(i), f"+{number(i)}", f"98{i:08d}", f"098{i:08d}"):
            assert plain not in dump


def test_remove_by_file_prefix_and_per_flow_entries(make_harness):
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID

    h = make_harness(batch_size=50)
    put_suppress_file(h, f"suppress/{DEMO_FLOW_ID}/hold.csv", "phone\n9800000001\n9800000002\n",
                      {"hold-hours": "48"})
    put_suppress_file(h, "suppress/Other001/x.csv", "phone\n9800000003\n")  # another flow's entry
    out = put_suppress_file(h, "suppress/remove/" + DEMO_FLOW_ID + "/undo.csv", "phone\n+91 98000 00002\n")
    assert out["files"][0]["action"] == "remove" and out["files"][0]["entries"] == 1
    obj = h.upload("c.csv", csv_rows(5))
    h.ingest(obj)
    h.drain()
    got = {r["row"]: r for r in h.report(obj)}
    assert got["2"]["status"] == Status.SUPPRESSED and f"flow {DEMO_FLOW_ID}" in got["2"]["reason"]
    assert "until" in got["2"]["reason"]  # a temporary hold
    assert [got[r]["status"] for r in ("1", "3", "4", "5")] == [Status.ACCEPTED] * 4


def test_an_opt_out_pressed_in_a_call_suppresses_the_number_for_later_files(make_harness):
    h = make_harness(opt_out_dtmf="9")
    first = h.upload("first.csv", csv_rows(3))
    h.ingest(first)
    h.drain()
    call = next(c for c in h.sim.accepted_calls() if c["client-identifier"] == "C-000001")
    ref = next(k["value"] for k in call["keys"] if k["name"] == "$flow.key.OutboundRef")
    push = {"phonon-uuid": call["phonon-uuid"], "keys": call["keys"],
            "callDetails": [{"startTime": "2026-11-30T10:00:00", "duration": "12000", "hangupCause": "NORMAL_CLEARING",
                             "calleeNumber": call["contact-numbers"][0], "dtmfPressesd": ["9"]}]}
    assert wiring.webhook_service().handle(json.dumps(push))["matched"] is True
    assert ref.endswith(".2")

    later = h.upload("later.csv", csv_rows(3, prefix="L"))  # same numbers, other identifiers
    h.ingest(later)
    h.drain()
    rows = h.report(later)
    assert [r["status"] for r in rows] == [Status.ACCEPTED, Status.SUPPRESSED, Status.ACCEPTED]
    assert "webhook opt-out (pressed 9" in rows[1]["reason"] and "9800000001" not in rows[1]["reason"]
    assert "9800000001" not in scan_dump(h)


def test_the_frequency_cap_across_files(make_harness):
    h = make_harness(frequency_caps="*=2/24h")
    for name in ("a.csv", "b.csv"):  # other identifiers, same numbers: no duplicates, two contacts each
        obj = h.upload(name, csv_rows(2, prefix=name[0]))
        h.ingest(obj)
        h.drain()
        assert statuses(h.report(obj)) == {"ACCEPTED": 2}
    third = h.upload("c.csv", csv_rows(3, prefix="c"))
    h.ingest(third)
    h.drain()
    rows = h.report(third)
    assert [r["status"] for r in rows] == [Status.SUPPRESSED, Status.SUPPRESSED, Status.ACCEPTED]
    assert "frequency cap" in rows[0]["reason"] and "at most 2 per 24 h" in rows[0]["reason"]
    assert len(h.sim.accepted_calls()) == 5


def test_a_row_held_back_at_dispatch_gives_its_dedupe_claim_back_so_a_later_file_sends_it(make_harness):
    # Given a file queued before its numbers were suppressed (the dedupe window is on)
    h = make_harness(batch_size=10)
    first = h.upload("before-hold.csv", csv_rows(3))
    h.ingest(first)
    request_event(h, {"action": "add", "numbers": [f"+{number(1)}"]})
    h.drain()
    # Then the held row is SUPPRESSED at dispatch and the others sent
    assert statuses(h.report(first)) == {"ACCEPTED": 2, "SUPPRESSED": 1}
    # When the hold is lifted and the same calls come again in a later file
    request_event(h, {"action": "remove", "numbers": [f"+{number(1)}"]})
    later = h.upload("after-hold.csv", csv_rows(3))
    h.ingest(later)
    h.drain()
    # Then the call never sent is sent now (its claim was given back), the two sent are DUPLICATE
    rows = {r["row"]: r["status"] for r in h.report(later)}
    assert rows == {"1": Status.DUPLICATE, "2": Status.ACCEPTED, "3": Status.DUPLICATE}
    assert [c["contact-numbers"][0] for c in h.sim.accepted_calls()].count(number(1)) == 1
