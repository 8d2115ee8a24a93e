"""Issue 12 probes (QA): control by key for keys S3 spells oddly (spaces, `+`, unicode, nested
prefixes; URL-encoded in S3 notifications), `cancel/<same key>` for them, control of finished /
cancelled / paused jobs, malformed control events, reports per upload of one key. The real
handlers against moto and the bundled simulator (the integration harness)."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from phonon_outbound.control import ControlTarget, UnknownTarget
from phonon_outbound.ingest import ObjectRef

from .conftest import csv_rows, statuses
from .test_control import Pump, control, control_event, ingest_event

ODD_KEYS = ["incoming/my contacts.csv", "incoming/a+b.csv", "incoming/deep/er/ünï 名 +x%20y.csv",
            "incoming/100%.csv"]


def notification(bucket: str, key: str, version: str | None, size: int = 0) -> dict:
    """An S3 event notification as S3 sends it: the key URL-encoded (space -> '+')."""
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventName": "ObjectCreated:Put", "eventTime": "2026-11-30T10:00:00.000Z",
                         "s3": {"bucket": {"name": bucket}, "object": {
                             "key": quote_plus(key, safe="/"), "size": size, "versionId": version}}}]}


def ingest_odd(h, key: str, rows: int = 20, prefix: str = "A") -> ObjectRef:
    data = csv_rows(rows, prefix=prefix)
    put = h.s3.put_object(Bucket=h.bucket, Key=key, Body=data)
    obj = ObjectRef(h.bucket, key, put.get("VersionId"), put.get("ETag"), len(data))
    out = ingest_event(notification(h.bucket, key, put.get("VersionId"), len(data)))
    assert out["files"][0]["status"] not in ("rejected", "failed"), out
    assert out["files"][0]["job"] == obj.job_id
    return obj


@pytest.mark.parametrize("key", ODD_KEYS)
def test_an_oddly_spelled_key_is_paused_resumed_by_key_and_cancelled_by_its_cancel_marker(make_harness, key):
    h = make_harness(batch_size=10, pause_poll_s=1)
    obj = ingest_odd(h, key)
    short = key[len("incoming/"):]
    for name in (key, short):
        answer = control().apply("pause", ControlTarget(key=name), "hold")
        assert answer["job"] == obj.job_id and answer["key"] == key and answer["state"] == "paused"
    with pytest.raises(UnknownTarget):  # S3 keys may begin or end with spaces: a key is matched exactly
        control().apply("pause", ControlTarget(key=f"  {key} "), "hold")
    assert control().apply("resume", ControlTarget(key=short, version=obj.version_id))["job"] == obj.job_id
    assert control().apply("pause", ControlTarget(key=short))["already"] is False
    # the emergency brake: cancel/<the key without incoming/>, as S3 notifies it (URL-encoded)
    marker = f"cancel/{short}"
    put = h.s3.put_object(Bucket=h.bucket, Key=marker, Body=b"")
    out = ingest_event(notification(h.bucket, marker, put.get("VersionId")))
    assert out["files"][0]["status"] == "controlled", out
    assert out["files"][0]["control"]["job"] == obj.job_id and out["files"][0]["control"]["state"] == "cancelled"
    Pump(h).run_for(20, until=lambda: bool(h.job(obj).get("completed")))
    assert statuses(h.report(obj)) == {"CANCELLED": 20} and h.sim.stats()["requests"] == 0


@pytest.mark.parametrize("key", ODD_KEYS)
def test_an_oddly_spelled_key_is_cancelled_by_an_eventbridge_control_event_and_cancel_marker(make_harness, key):
    h = make_harness(batch_size=10)
    obj = ingest_odd(h, key)
    out = ingest_event(control_event({"action": "pause", "key": key}))
    assert out["files"][0]["control"]["job"] == obj.job_id
    marker = f"cancel/{key}"
    put = h.s3.put_object(Bucket=h.bucket, Key=marker, Body=b"")
    event = {"version": "0", "id": "e2", "detail-type": "Object Created", "source": "aws.s3",
             "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {"bucket": {"name": h.bucket}, "object": {"key": marker, "size": 0,
                                                                  "version-id": put.get("VersionId")}}}
    out = ingest_event(event)
    assert out["files"][0]["status"] == "controlled" and out["files"][0]["control"]["job"] == obj.job_id


def test_two_keys_differing_only_by_plus_and_space_are_told_apart(make_harness):
    h = make_harness(batch_size=10)
    plus = ingest_odd(h, "incoming/a+b.csv", 5, "P")
    space = ingest_odd(h, "incoming/a b.csv", 6, "S")
    assert control().apply("pause", ControlTarget(key="a+b.csv"))["job"] == plus.job_id
    assert control().apply("pause", ControlTarget(key="a b.csv"))["job"] == space.job_id
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/a+b.csv", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/a+b.csv", put.get("VersionId")))
    assert out["files"][0]["control"]["job"] == plus.job_id
    assert not h.job(space).get("cancelled_reason")


# ------------------------------------------------------------------ control of jobs in every state
def test_cancel_of_a_finished_job_changes_nothing_and_says_so(make_harness):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(12, prefix="A"))
    h.ingest(a)
    h.drain()
    assert h.job(a)["completed"] is True
    before = h.report_text(a)
    for action in ("cancel", "pause", "resume"):
        answer = control().apply(action, ControlTarget(job=a.job_id), "too late")
        assert answer == {"action": action, "job": a.job_id, "state": "completed", "already": True}, action
    # the marker too
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/a.csv", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/a.csv", put.get("VersionId")))
    assert out["files"][0]["control"] == {"action": "cancel", "job": a.job_id, "key": "incoming/a.csv",
                                          "version": a.version_id, "state": "completed", "already": True}
    assert h.report_text(a) == before and not h.job(a).get("cancelled_reason")
    assert h.summary(a)["cancelled"] == 0 and h.job(a)["status"] == "COMPLETED"


def test_a_cancelled_job_stays_cancelled_whatever_is_asked_next(make_harness):
    h = make_harness(batch_size=10, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    assert control().apply("cancel", ControlTarget(job=a.job_id), "wrong list")["state"] == "cancelled"
    assert control().apply("pause", ControlTarget(job=a.job_id)) == {
        "action": "pause", "job": a.job_id, "state": "cancelled", "already": True}
    resumed = control().apply("resume", ControlTarget(job=a.job_id))
    assert resumed["state"] == "cancelled" and resumed["already"] is True
    assert control().apply("cancel", ControlTarget(key="a.csv"), "again")["already"] is True
    Pump(h).run_for(20, until=lambda: bool(h.job(a).get("completed")))
    report = h.report(a)
    assert statuses(report) == {"CANCELLED": 20} and h.sim.stats()["requests"] == 0
    assert {r["reason"] for r in report} == {"wrong list"}
    assert h.summary(a)["cancelled"] == 20 and h.summary(a)["cancelled_reason"] == "wrong list"


def test_a_paused_then_cancelled_job_resumed_stays_cancelled_and_sends_nothing(make_harness):
    h = make_harness(batch_size=10, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    control().apply("pause", ControlTarget(job=a.job_id))
    control().apply("cancel", ControlTarget(job=a.job_id))
    answer = control().apply("resume", ControlTarget(job=a.job_id))
    assert answer["state"] == "cancelled"
    Pump(h).run_for(20, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"CANCELLED": 20} and h.sim.stats()["requests"] == 0


# ------------------------------------------------------------------ malformed control events
MALFORMED = [
    {},  # no action, no target
    {"action": "pause"},
    {"job": "JOB"},  # no action
    {"action": None, "job": "JOB"},
    {"action": ["pause"], "job": "JOB"},
    {"action": {"x": 1}, "job": "JOB"},
    {"action": 1, "job": "JOB"},
    {"action": "pause", "job": ["JOB"]},
    {"action": "pause", "job": {"id": "JOB"}},
    {"action": "pause", "job": True},
    {"action": "pause", "job": 3.5},
    {"action": "pause", "key": 12},
    {"action": "pause", "key": "a.csv", "version": 7},
    {"action": "pause", "version": "v1"},
    {"action": "pause", "job": "JOB", "key": "a.csv"},
    {"action": "pause", "job": "JOB", "flow": "DemoFlw1"},
    {"action": "pause", "job": ""},
    {"action": "pause", "job": "   "},
    {"action": "pause", "key": "\ud800.csv"},
    {"action": "pause", "key": "x" * 1_000_000},
    {"action": "pause", "job": "J" * 1_000_000},
    {"action": "cancel", "flow": "DemoFlw1"},
    {"action": "pause", "flow": 12345678},
    {"action": "pause", "job": "no-such-job"},
    {"action": "pause", "key": "incoming/nothing.csv"},
    {"action": "pause", "key": "a.csv", "version": "not-a-version"},
    {"action": "pause", "job": "a\x00b"},
]


@pytest.mark.parametrize("i", range(len(MALFORMED)))
def test_a_malformed_control_event_is_answered_never_raised_and_changes_nothing(make_harness, i):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(5, prefix="A"))
    h.ingest(a)
    detail = json.loads(json.dumps(MALFORMED[i]).replace('"JOB"', json.dumps(a.job_id)).replace(
        '"\\ud800.csv"', '"\\ud800.csv"'))
    out = ingest_event(control_event(detail))
    assert len(out["files"]) == 1, out
    entry = out["files"][0]
    assert entry["status"] in ("refused", "not found"), entry
    assert isinstance(entry.get("reason"), str) and 0 < len(entry["reason"]) <= 2000
    item = h.job(a)
    assert not item.get("paused_reason") and not item.get("cancelled_reason")


def test_a_huge_unknown_action_is_refused_with_a_bounded_answer(make_harness, capsys):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(5, prefix="A"))
    h.ingest(a)
    out = ingest_event(control_event({"action": "p" * 200_000, "job": a.job_id}))
    entry = out["files"][0]
    assert entry["status"] == "refused"
    assert len(entry["reason"]) <= 2000
    assert "p" * 1000 not in capsys.readouterr().err


@pytest.mark.parametrize("detail", [None, "pause", ["pause"], 42, True])
def test_a_control_event_whose_detail_is_not_an_object_is_answered(make_harness, detail):
    make_harness()
    out = ingest_event(control_event(detail))  # type: ignore[arg-type]
    assert out["files"][0]["status"] == "refused"


@pytest.mark.parametrize("reason", [12345, ["x"], {"a": 1}, None, "r" * 1_000_000, "call 9876543210 back\nnow"])
def test_a_control_event_with_an_odd_reason_is_carried_out_with_a_bounded_masked_reason(make_harness, reason):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(5, prefix="A"))
    h.ingest(a)
    out = ingest_event(control_event({"action": "pause", "job": a.job_id, "reason": reason}))
    assert out["files"][0]["status"] == "controlled" and out["files"][0]["control"]["state"] == "paused"
    stored = h.job(a)["paused_reason"]
    assert 0 < len(stored) <= 300 and "9876543210" not in stored and "\n" not in stored


@pytest.mark.parametrize("action", ["PAUSE", " Pause ", "pause\n"])
def test_an_action_in_another_case_or_with_spaces_is_taken(make_harness, action):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(5, prefix="A"))
    h.ingest(a)
    assert ingest_event(control_event({"action": action, "job": a.job_id}))["files"][0]["status"] == "controlled"


# ------------------------------------------------------------------ a report per upload
def test_every_upload_of_one_key_keeps_its_own_report_and_a_later_cancel_touches_only_the_newest(make_harness):
    import time

    h = make_harness(batch_size=10)
    first = h.upload("same.csv", csv_rows(5, prefix="F"))
    h.ingest(first)
    h.drain()
    first_report = h.report_text(first)
    time.sleep(1.1)
    second = h.upload("same.csv", csv_rows(7, prefix="S"))
    h.ingest(second)
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/same.csv", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/same.csv", put.get("VersionId")))
    assert out["files"][0]["control"]["job"] == second.job_id
    h.drain()
    assert h.report_keys(first) != h.report_keys(second)
    assert h.report_text(first) == first_report and statuses(h.report(first)) == {"ACCEPTED": 5}
    assert statuses(h.report(second)) == {"CANCELLED": 7}
    names = [o["Key"] for o in h.s3.list_objects_v2(Bucket=h.bucket, Prefix="reports/incoming/same.csv")["Contents"]]
    assert len([n for n in names if n.endswith(".results.csv")]) == 2


# ------------------------------------------------------------------ outcomes and status on the real pipeline
def push_body(h, body: dict) -> dict:
    """A flow-end push (any body) through the real webhook handler with the stack's credentials."""
    import base64

    import boto3

    import webhook_handler

    from .conftest import Ctx

    creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=h.env["WEBHOOK_SECRET_NAME"])["SecretString"])
    event = json.loads((h.stack.root / "events" / "webhook-flow-end.json").read_text())
    event["body"] = json.dumps(body)
    event["isBase64Encoded"] = False
    event["headers"]["authorization"] = "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()
    resp = webhook_handler.handler(event, Ctx("webhook"))
    assert resp["statusCode"] == 200, resp
    return json.loads(resp["body"]) if resp.get("body") else {}


def keys(job: str, row: int) -> list[dict]:
    return [{"name": "$flow.key.OutboundRef", "value": f"{job}.{row}"}]


ANSWERED = {"connectTime": "2026-11-30T10:00:05+05:30", "endTime": "2026-11-30T10:00:48+05:30",
            "hangupCause": "NORMAL_CLEARING"}


def test_an_outcome_pushed_before_its_chunk_settled_is_in_the_report_and_counted_once(make_harness):
    from phonon_outbound import wiring

    h = make_harness()
    obj = h.upload("early.csv", csv_rows(4))
    h.ingest(obj)
    for _ in range(2):  # the same early push twice
        assert push_body(h, {"phonon-uuid": "early-2", "keys": keys(obj.job_id, 2),
                             "callDetails": [{**ANSWERED, "dtmfPressesd": ["3"]}]})["matched"] is True
    h.drain()
    push_body(h, {"phonon-uuid": "late-4", "keys": keys(obj.job_id, 4), "smsDetails": [{"deliveryStatus": "DELIVRD"}]})
    wiring.finisher().finalize(obj.job_id, force=True)  # the report function's next write
    report = h.report(obj)
    assert [(r["status"], r["outcome"]) for r in report] == [
        ("ACCEPTED", "PENDING"), ("ACCEPTED", "ANSWERED"), ("ACCEPTED", "PENDING"), ("ACCEPTED", "DELIVERED")]
    assert (report[1]["phonon-uuid"], report[1]["duration_s"], report[1]["dtmf"], report[1]["attempts"]) == \
        ("early-2", "43", "3", "1")
    assert report[1]["request-id"] and report[1]["client-identifier"] == "C-000001"
    summ = h.summary(obj)
    assert summ["outcomes"] == {"arrived": 2, "pending": 2, "final": False}
    assert h.job(obj)["outcomes"] == 2


def test_status_looks_up_one_call_by_uuid_client_id_and_request_id_on_the_real_pipeline(make_harness):
    from phonon_outbound import wiring
    from phonon_outbound_dev import job_status as st

    h = make_harness()
    obj = h.upload("look.csv", csv_rows(3))
    h.ingest(obj)
    h.drain()
    push_body(h, {"phonon-uuid": "look-1", "keys": keys(obj.job_id, 1), "callDetails": [
        {**ANSWERED, "dtmfPressesd": ["1", "#"]}, {"hangupCause": "NO_ANSWER"}]})
    store = wiring.store()
    report = h.report(obj)
    by_uuid = st.lookup(store, "uuid", "look-1")
    assert len(by_uuid) == 1
    call = by_uuid[0]
    assert (call["job"], str(call["row"]), call["client_identifier"], call["status"], call["outcome"]) == \
        (obj.job_id, "1", "C-000000", "ACCEPTED", "ANSWERED")
    assert (str(call["duration"]), str(call["attempts"]), call["dtmf"], call["hangup_cause"]) == \
        ("43", "2", "1#", "NORMAL_CLEARING")
    assert call["request_id"] == report[0]["request-id"]
    assert [c["phonon_uuid"] for c in st.lookup(store, "cid", "C-000000")] == ["look-1"]
    # by request-id: the results table knows only the pushed call; with --job every row of the request
    assert [c["phonon_uuid"] for c in st.lookup(store, "request_id", report[0]["request-id"])] == ["look-1"]
    with_job = st.lookup(store, "request_id", report[0]["request-id"], job=obj.job_id)
    assert sorted(str(c["row"]) for c in with_job) == ["1", "2", "3"]
    # a call that never was: nothing found
    assert st.lookup(store, "uuid", "nope") == [] and st.lookup(store, "cid", "C-999999") == []
    assert st.lookup(store, "cid", "C-000002", job=obj.job_id)[0]["status"] == "ACCEPTED"


def _html_text(page: str) -> tuple[str, list[str]]:
    """The page's text and its unclosed tags (a strict-ish parse)."""
    from html.parser import HTMLParser

    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack: list[str] = []
            self.text: list[str] = []
            self.scripts = 0

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.scripts += 1
            if tag not in ("meta", "br", "img", "link", "input", "hr", "line", "rect", "path", "circle"):
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs):
            pass

        def handle_endtag(self, tag):
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass

        def handle_data(self, data):
            self.text.append(data)

    p = P()
    p.feed(page)
    p.close()
    assert p.scripts == 0
    return " ".join(p.text), p.stack


@pytest.mark.parametrize(("name", "data", "state"), [
    ("header-only.csv", b"client-identifier,phone\n", None),
    ("no-phone.csv", b"client-identifier,name\nC1,x\n", "rejected"),
    ("empty.csv", b"", "rejected"),
])
def test_status_and_its_html_for_a_job_with_no_rows_or_a_rejected_file(make_harness, tmp_path, name, data, state):
    from phonon_outbound import wiring
    from phonon_outbound_dev import job_status as st

    h = make_harness()
    obj = h.upload(name, data)
    h.ingest(obj)
    h.drain()
    item = h.job(obj)
    assert item.get("completed") is True
    summ = h.summary(obj)
    pic = st.picture(wiring.store(), obj.job_id, limit=30_000)
    assert pic is not None
    if state:
        assert pic.state == state and pic.reason == summ["error"]
    else:
        assert pic.state in ("completed", "rejected")
    assert pic.eta_s == 0 and pic.sent == 0 and sum(pic.counts.values()) == 0
    assert summ["outcomes"] == {"arrived": 0, "pending": 0, "final": True} and item.get("report_final") is True
    assert "\n".join(st.picture_lines(pic))
    err = st._write_page(tmp_path / "job.html", pic, obj.job_id)
    assert err == ""
    text, unclosed = _html_text((tmp_path / "job.html").read_text(encoding="utf-8"))
    assert unclosed == []
    assert pic.state in text and name in text


def test_the_html_of_a_sent_job_has_its_counts_and_outcome_mix(make_harness, tmp_path):
    from phonon_outbound import wiring
    from phonon_outbound_dev import job_status as st

    h = make_harness(batch_size=10)
    obj = h.upload("<b>x</b>&.csv", csv_rows(25))
    h.ingest(obj)
    h.drain()
    push_body(h, {"phonon-uuid": "m-1", "keys": keys(obj.job_id, 1), "callDetails": [ANSWERED]})
    push_body(h, {"phonon-uuid": "m-2", "keys": keys(obj.job_id, 2), "callDetails": [{"hangupCause": "USER_BUSY"}]})
    pic = st.picture(wiring.store(), obj.job_id, limit=30_000)
    assert pic.counts["accepted"] == 25 and pic.outcomes == 2
    assert pic.mix["groups"]["answered"] == 1 and pic.mix["groups"]["no answer"] == 1
    assert pic.mix["groups"]["waiting"] == 23
    assert st._write_page(tmp_path / "j.html", pic, obj.job_id) == ""
    page = (tmp_path / "j.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;&amp;.csv" in page
    import re

    assert "<svg" in page and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing to fetch
    assert 'data-calls="' in page
    text, unclosed = _html_text(page)
    assert unclosed == []
    assert "25" in text and "2 of 25 accepted" in text and "answered 1" in text and "waiting 23" in text


# ------------------------------------------------------------------ the report function on the real queue
def _report_handler():
    """functions/report/report_handler.py (not on pytest's pythonpath), loaded once."""
    import importlib.util
    import sys
    from pathlib import Path

    if "report_handler" not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "functions" / "report" / "report_handler.py"
        spec = importlib.util.spec_from_file_location("report_handler", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["report_handler"] = module
    return sys.modules["report_handler"]


class ReportWorker:
    """The report queue of the stack, drained through the real ReportFunction handler."""

    def __init__(self, h, url: str):
        self.h, self.url = h, url
        self.handled: list[dict] = []

    def depth(self) -> int:
        attrs = self.h.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])["Attributes"]
        return sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
                                           "ApproximateNumberOfMessagesNotVisible"))

    def once(self, wait: float = 0) -> int:
        from .conftest import Ctx

        report_handler = _report_handler()
        messages = self.h.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=int(wait)).get("Messages", [])
        if not messages:
            return 0
        arn = self.h.stack.physical["ReportQueue"]["Arn"]
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                              "eventSourceARN": arn, "awsRegion": "us-east-1"} for m in messages]}
        out = report_handler.handler(event, Ctx("report"))
        failed = {f["itemIdentifier"] for f in out.get("batchItemFailures", [])}
        for m in messages:
            self.handled.append(json.loads(m["Body"]))
            if m["MessageId"] not in failed:
                self.h.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def drain(self, timeout: float = 20) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self.depth() and time.monotonic() < deadline:
            if not self.once(wait=1):
                time.sleep(0.2)
        assert self.depth() == 0, "report queue did not drain"


def test_many_outcomes_within_the_debounce_queue_one_write_and_the_last_makes_it_final(make_harness, stack):
    report_handler = _report_handler()
    url = stack.physical["ReportQueue"]["Ref"]
    h = make_harness(report_queue_url=url, report_debounce_s=60)
    worker = ReportWorker(h, url)
    obj = h.upload("deb.csv", csv_rows(15))
    h.ingest(obj)
    h.drain()
    worker.drain()  # the first write (asked by dispatch when the job settled)
    assert h.job(obj)["completed"] is True and h.summary(obj)["outcomes"]["pending"] == 15
    for row in range(1, 16):
        push_body(h, {"phonon-uuid": f"deb-{row}", "keys": keys(obj.job_id, row), "callDetails": [ANSWERED]})
    assert worker.depth() == 1  # one write booked for all 15 outcomes (delayed to the minute's end)
    # its delivery, a minute later (moto holds a delayed message in real time: delivered here by hand)
    h.sqs.purge_queue(QueueUrl=url)
    from .conftest import Ctx

    record = {"messageId": "m1", "receiptHandle": "r1", "body": json.dumps({"job": obj.job_id, "kind": "outcome"}),
              "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
              "eventSourceARN": h.stack.physical["ReportQueue"]["Arn"], "awsRegion": "us-east-1"}
    assert report_handler.handler({"Records": [record]}, Ctx("report")) == {"batchItemFailures": []}
    summ = h.summary(obj)
    assert summ["outcomes"] == {"arrived": 15, "pending": 0, "final": True}
    assert {r["outcome"] for r in h.report(obj)} == {"ANSWERED"}
    assert h.job(obj)["report_final"] is True
    # the schedule then asks for nothing, and a replayed push books nothing
    assert report_handler.handler({"source": "aws.events", "detail-type": "Scheduled Event"},
                                  Ctx("report"))["requested"] == []
    push_body(h, {"phonon-uuid": "deb-3", "keys": keys(obj.job_id, 3), "callDetails": [ANSWERED]})
    assert worker.depth() == 0


def test_a_report_writer_killed_holding_the_lease_is_retried_by_the_next_request(make_harness, stack):
    from phonon_outbound import wiring

    url = stack.physical["ReportQueue"]["Ref"]
    h = make_harness(report_queue_url=url)
    worker = ReportWorker(h, url)
    obj = h.upload("dead.csv", csv_rows(5))
    h.ingest(obj)
    # a writer took the finalize lease and was killed (a time-out: none of our code ran after)
    assert wiring.store().jobs.claim_finalize(obj.job_id, lease_s=3) is True
    h.drain()
    import time

    deadline = time.monotonic() + 30
    while not h.job(obj).get("completed") and time.monotonic() < deadline:
        if not worker.once(wait=1):
            time.sleep(0.2)
    assert h.job(obj).get("completed") is True  # written once the dead writer's lease ran out
    assert [r["status"] for r in h.report(obj)] == ["ACCEPTED"] * 5


# ------------------------------------------------------------------ fair share (the express lane, on moto)
def _lane(h, name: str):
    url = h.stack.physical[name]["Ref"]
    arn = h.stack.physical[name]["Arn"]

    def receive(n: int = 10) -> list[dict]:
        return h.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, AttributeNames=["All"]).get("Messages", [])

    def dispatch(messages: list[dict]) -> None:
        import dispatch_handler

        from .conftest import Ctx

        event = h.sqs_event(messages)
        for r in event["Records"]:
            r["eventSourceARN"] = arn
        out = dispatch_handler.handler(event, Ctx("dispatch", 60))
        failed = {f["itemIdentifier"] for f in out.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                h.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def depth() -> int:
        attrs = h.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
                                           "ApproximateNumberOfMessagesNotVisible"))

    return receive, dispatch, depth


def test_a_small_file_dropped_behind_a_big_one_is_sent_from_its_own_lane_before_the_big_ones_backlog(make_harness):
    h = make_harness(batch_size=10, express_max_rows=50)
    big = h.upload("big.csv", csv_rows(300, prefix="B"))
    h.ingest(big)
    small = h.upload("small.csv", csv_rows(20, prefix="S"))
    h.ingest(small)
    assert h.job(small).get("lane") == "express" and h.job(big).get("lane") != "express"
    receive_x, dispatch_x, depth_x = _lane(h, "ExpressQueue")
    _, _, depth_bulk = _lane(h, "ChunkQueue")
    assert depth_x() == 2 and depth_bulk() == 30
    # the express lane's dispatcher takes the small file's chunks while all 30 of the big one wait
    while depth_x():
        messages = receive_x()
        if messages:
            dispatch_x(messages)
    sent = [c["client-identifier"][0] for c in h.sim.accepted_calls()]
    assert sent == ["S"] * 20 and depth_bulk() == 30
    assert h.job(small)["completed"] is True and {r["status"] for r in h.report(small)} == {"ACCEPTED"}
    h.drain()
    assert {r["status"] for r in h.report(big)} == {"ACCEPTED"} and len(h.sim.accepted_calls()) == 320


def test_a_paused_then_cancelled_small_job_settles_on_its_own_lane(make_harness):
    h = make_harness(batch_size=10, express_max_rows=50, pause_poll_s=1)
    small = h.upload("small.csv", csv_rows(20, prefix="S"))
    h.ingest(small)
    receive_x, dispatch_x, depth_x = _lane(h, "ExpressQueue")
    _, _, depth_bulk = _lane(h, "ChunkQueue")
    control().apply("pause", ControlTarget(key="small.csv"))
    import time

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        messages = receive_x()
        if messages:
            dispatch_x(messages)
        time.sleep(0.1)
    assert h.sim.stats()["requests"] == 0 and depth_x() == 2 and depth_bulk() == 0  # handed back to its lane
    control().apply("cancel", ControlTarget(key="small.csv"), "wrong file")
    deadline = time.monotonic() + 20
    while depth_x() and time.monotonic() < deadline:
        messages = receive_x()
        if messages:
            dispatch_x(messages)
        else:
            time.sleep(0.2)
    assert h.job(small)["completed"] is True and statuses(h.report(small)) == {"CANCELLED": 20}
    assert h.sim.stats()["requests"] == 0


# ------------------------------------------------------------------ an operator's reason in the report
@pytest.mark.parametrize("number", ["+91 98765 43210", "(987) 654-3210", "987-654-3210"])
def test_a_cancel_reason_naming_a_formatted_phone_number_does_not_put_it_in_the_report(make_harness, number):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(10, prefix="A"))
    h.ingest(a)
    control().apply("cancel", ControlTarget(job=a.job_id), f"customer on {number} asked us to stop")
    h.drain()
    digits = "".join(ch for ch in number if ch.isdigit())
    for r in h.report(a):
        assert r["status"] == "CANCELLED"
        assert digits not in "".join(ch for ch in r["reason"] if ch.isdigit()), r["reason"]
    assert digits not in "".join(ch for ch in h.summary(a)["cancelled_reason"] if ch.isdigit())


def test_a_cancel_reason_naming_an_unbroken_phone_number_is_masked_in_the_report(make_harness):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(10, prefix="A"))
    h.ingest(a)
    control().apply("cancel", ControlTarget(job=a.job_id), "customer on +919876543210 asked us to stop")
    h.drain()
    assert all("9876543" not in r["reason"] for r in h.report(a))
    assert "9876543" not in h.summary(a)["cancelled_reason"]


# ------------------------------------------------------------------ the reconciler on DynamoDB (moto)
def _handler(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    mod = f"{name}_handler"
    if mod not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "functions" / name / f"{mod}.py"
        spec = importlib.util.spec_from_file_location(mod, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[mod] = module
    return sys.modules[mod]


@pytest.mark.parametrize("shape", ["202", "200"])
def test_the_reconciler_fills_in_lost_pushes_on_dynamodb_in_requests_of_at_most_200(make_harness, monkeypatch,
                                                                                      shape):
    from phonon_outbound import wiring

    from .conftest import Ctx

    h = make_harness(shape=shape, batch_size=50)
    monkeypatch.setenv("PULL_API_URL", h.sim.pull_url)
    monkeypatch.setenv("RECONCILE_AFTER_S", "0")
    wiring.reset()
    obj = h.upload("lost.csv", csv_rows(250))
    h.ingest(obj)
    h.drain()
    # one push came (row 7), the rest were lost
    uuid7 = next(c["phonon-uuid"] for c in h.sim.accepted_calls() if c["client-identifier"] == "C-000006")
    push_body(h, {"phonon-uuid": uuid7, "keys": keys(obj.job_id, 7), "callDetails": [{"hangupCause": "USER_BUSY"}]})
    assert h.summary(obj)["outcomes"]["pending"] >= 249
    import time

    time.sleep(1.1)  # older than reconcile_after_s (0) by whole seconds
    out = _handler("reconcile").handler({"jobs": [obj.job_id]}, Ctx("reconcile", 300))
    log = h.sim.pull_log()
    assert log and all(q["request-ids"] + q["phonon-uuids"] <= 200 for q in log)
    assert all(q["records"] <= 200 for q in log) if shape == "202" else True
    assert out["pulled"] == 249 and out["errors"] == 0, out
    wiring.finisher().finalize(obj.job_id, force=True)
    report = h.report(obj)
    assert [r["outcome"] for r in report].count("PENDING") == 0
    assert report[6]["outcome"] == "BUSY"
    assert h.summary(obj)["outcomes"] == {"arrived": 250, "pending": 0, "final": True}
    assert h.job(obj)["outcomes"] == 250
    again = _handler("reconcile").handler({"jobs": [obj.job_id]}, Ctx("reconcile", 300))
    assert again["requests"] == 0


def test_a_job_resumed_while_its_flow_is_paused_is_not_said_running(make_harness):
    from phonon_outbound import wiring
    from phonon_outbound_dev import job_status as st
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID

    h = make_harness(batch_size=10, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    control().apply("pause", ControlTarget(flow=DEMO_FLOW_ID))
    control().apply("pause", ControlTarget(job=a.job_id))
    answer = control().apply("resume", ControlTarget(job=a.job_id))
    Pump(h).run_for(2)
    assert h.sim.stats()["requests"] == 0  # still held by the flow
    pic = st.picture(wiring.store(), a.job_id, limit=30_000)
    assert pic.state == "paused"
    assert answer["state"] == pic.state


def test_a_cancel_between_two_ingest_invocations_ends_every_row_cancelled_and_writes_the_report(make_harness):
    import ingest_handler
    from phonon_outbound import wiring

    from .conftest import Ctx

    h = make_harness(batch_size=100, ingest_time_margin_s=5)
    obj = h.upload("mid.csv", csv_rows(5000))
    store = wiring.store()

    class StreamingRunsOut(Ctx):
        """Plenty of time for the validation pre-pass; none left once rows are being queued."""

        def get_remaining_time_in_millis(self) -> int:
            item = store.jobs.get_job(obj.job_id) or {}
            return 0 if item.get("rows_queued") else 900_000

    pending: list[dict] = []
    wiring.set_continuation(pending.append)
    first = ingest_handler.handler(h.s3_event(obj), StreamingRunsOut("ingest"))
    assert first["files"][0]["status"] == "paused", first
    assert pending and 0 < int(h.job(obj)["next_chunk"]) < 50
    # the operator's brake while ingest is between two invocations
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/mid.csv", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/mid.csv", put.get("VersionId")))
    assert out["files"][0]["control"]["state"] == "cancelled"
    while pending:
        ingest_handler.handler(pending.pop(0), Ctx("ingest"))
    h.drain()
    assert h.job(obj).get("completed") is True
    report = h.report(obj)
    assert len(report) == 5000 and statuses(report) == {"CANCELLED": 5000}
    assert h.sim.stats()["requests"] == 0
    summ = h.summary(obj)
    assert summ["cancelled"] == 5000 and summ["cancelled_reason"].startswith("cancelled by a file under cancel/")


def test_213_no_data_leaves_the_rows_pending_on_dynamodb_and_the_next_run_asks_again(make_harness, monkeypatch):
    import time

    from phonon_outbound import wiring

    from .conftest import Ctx

    h = make_harness(batch_size=10)
    monkeypatch.setenv("PULL_API_URL", h.sim.pull_url)
    monkeypatch.setenv("RECONCILE_AFTER_S", "0")
    wiring.reset()
    h.sim.webhook_delay_s = 3600.0  # the calls are still running: the pull API has nothing yet
    obj = h.upload("later.csv", csv_rows(25))
    h.ingest(obj)
    h.drain()
    time.sleep(1.1)
    out = _handler("reconcile").handler({"jobs": [obj.job_id]}, Ctx("reconcile", 300))
    assert out["no_data"] >= 1 and out["pulled"] == 0 and out["errors"] == 0, out
    assert {q["code"] for q in h.sim.pull_log()} == {213}
    wiring.finisher().finalize(obj.job_id, force=True)
    assert h.summary(obj)["outcomes"] == {"arrived": 0, "pending": 25, "final": False}
    # not yet is not never: the next run asks again (the simulator's calls end an hour after acceptance)
    out = _handler("reconcile").handler({"jobs": [obj.job_id]}, Ctx("reconcile", 300))
    assert out["requests"] >= 1 and out["no_data"] >= 1 and out["pulled"] == 0, out


@pytest.mark.parametrize("odd", ["incoming/a.csv ", "incoming/ a.csv"])
def test_a_cancel_marker_for_a_key_with_spaces_at_its_ends_cancels_that_file_not_its_trimmed_namesake(
        make_harness, odd):
    h = make_harness(batch_size=10)
    plain = ingest_odd(h, "incoming/a.csv", 5, "P")
    spaced = ingest_odd(h, odd, 6, "S")
    marker = "cancel/" + odd[len("incoming/"):]
    put = h.s3.put_object(Bucket=h.bucket, Key=marker, Body=b"")
    out = ingest_event(notification(h.bucket, marker, put.get("VersionId")))
    assert out["files"][0]["status"] == "controlled", out
    assert out["files"][0]["control"]["job"] == spaced.job_id
    assert not h.job(plain).get("cancelled_reason") and h.job(spaced).get("cancelled_reason")


def test_a_cancel_marker_for_a_key_ending_in_a_space_cancels_it_when_it_has_no_namesake(make_harness):
    h = make_harness(batch_size=10)
    spaced = ingest_odd(h, "incoming/b.csv ", 6, "S")
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/b.csv ", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/b.csv ", put.get("VersionId")))
    assert out["files"][0]["status"] == "controlled", out
    assert h.job(spaced).get("cancelled_reason")


def test_a_cancel_marker_whose_event_came_before_its_files_job_still_stops_that_file(make_harness):
    from datetime import UTC, datetime

    h = make_harness(batch_size=10)
    # Given a file uploaded, then its cancel/ marker, whose event is handled first (no job yet)
    data = csv_rows(10, prefix="E")
    put = h.s3.put_object(Bucket=h.bucket, Key="incoming/early.csv", Body=data)
    uploaded = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    marker = h.s3.put_object(Bucket=h.bucket, Key="cancel/early.csv", Body=b"")
    out = ingest_event(notification(h.bucket, "cancel/early.csv", marker.get("VersionId")))
    assert out["files"][0]["status"] == "not found"
    # When the file's own event comes
    event = notification(h.bucket, "incoming/early.csv", put.get("VersionId"), len(data))
    event["Records"][0]["eventTime"] = uploaded
    out = ingest_event(event)
    # Then nothing of it is sent: every row CANCELLED, with the marker named as the reason
    obj = ObjectRef(h.bucket, "incoming/early.csv", put.get("VersionId"), put.get("ETag"), len(data))
    Pump(h).run_for(10, until=lambda: bool(h.job(obj).get("completed")))
    rows = h.report(obj)
    assert statuses(rows) == {"CANCELLED": 10} and h.sim.stats()["requests"] == 0
    assert "cancel/early.csv" in rows[0]["reason"]


def test_a_cancel_marker_older_than_an_upload_does_not_stop_it(make_harness):
    from datetime import UTC, datetime, timedelta

    h = make_harness(batch_size=10)
    # Given yesterday's marker for a key (its job was cancelled then), and today a new upload of it
    h.s3.put_object(Bucket=h.bucket, Key="cancel/daily.csv", Body=b"")
    data = csv_rows(10, prefix="D")
    put = h.s3.put_object(Bucket=h.bucket, Key="incoming/daily.csv", Body=data)
    event = notification(h.bucket, "incoming/daily.csv", put.get("VersionId"), len(data))
    event["Records"][0]["eventTime"] = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    ingest_event(event)
    obj = ObjectRef(h.bucket, "incoming/daily.csv", put.get("VersionId"), put.get("ETag"), len(data))
    Pump(h).run_for(20, until=lambda: bool(h.job(obj).get("completed")))
    # Then it is sent as usual
    assert statuses(h.report(obj)) == {"ACCEPTED": 10}
