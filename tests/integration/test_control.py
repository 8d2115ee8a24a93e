"""Pause, resume and cancel (control.py) on the real handlers against moto and the bundled
simulator: what the simulator was asked (its request log) while a job or a flow is paused, after
it is resumed, after it is cancelled; the control event and `cancel/` files through the ingest
handler; and the store's control items on both stores."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from phonon_outbound import wiring
from phonon_outbound.control import (
    ControlError,
    ControlService,
    ControlTarget,
    UnknownTarget,
    finisher_settled,
)
from phonon_outbound.store import Control
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, FaultPlan

from .conftest import Ctx, csv_rows, statuses


def control() -> ControlService:
    s, store = wiring.settings(), wiring.store()
    return ControlService(store, s.bucket_name, finisher_settled(store, wiring.finisher()))


def calls_of(h, prefix: str) -> list[str]:
    """Client-identifiers of the calls Phonon accepted for one file (its rows' prefix)."""
    return [c["client-identifier"] for c in h.sim.accepted_calls() if c["client-identifier"].startswith(prefix)]


class Pump:
    """Dispatch whatever the chunk queue holds, one receive at a time, counting each job's
    receives and the highest receive count any message reached."""

    def __init__(self, h):
        self.h = h
        self.receives: Counter[str] = Counter()
        self.max_receive_count = 0

    def once(self) -> int:
        messages = self.h.receive(1)  # one chunk at a time: a control call can fall between two
        for m in messages:
            self.receives[json.loads(m["Body"])["job"]] += 1
            self.max_receive_count = max(self.max_receive_count, int(m["Attributes"]["ApproximateReceiveCount"]))
        if messages:
            self.h.dispatch(messages)
        return len(messages)

    def run_for(self, seconds: float, until=lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            if not self.once():
                time.sleep(0.1)


def two_files(h, a_rows: int = 60, b_rows: int = 30):
    a = h.upload("a.csv", csv_rows(a_rows, prefix="A"))
    h.ingest(a)
    b = h.upload("b.csv", csv_rows(b_rows, prefix="B"))
    h.ingest(b)
    return a, b


def test_a_paused_job_sends_nothing_while_others_go_on_and_after_resume_completes_once(make_harness):
    # Given two files in 10-row chunks, and part of the first one sent
    h = make_harness(batch_size=10, pause_poll_s=1)
    a, b = two_files(h)
    pump = Pump(h)
    pump.run_for(20, until=lambda: len(calls_of(h, "A-")) >= 10)
    assert 10 <= len(calls_of(h, "A-")) < 60
    # When the operator pauses it
    answer = control().apply("pause", ControlTarget(key="incoming/a.csv"), "wrong script")
    assert answer == {"action": "pause", "job": a.job_id, "key": "incoming/a.csv", "version": a.version_id,
                      "state": "paused", "already": False}
    sent_at_pause = len(calls_of(h, "A-"))
    requests_at_pause, b_left = h.sim.stats()["requests"], 30 - len(calls_of(h, "B-"))
    # Then the other file is sent in full while the paused one's chunks wait, unsent
    pump.run_for(30, until=lambda: bool(h.job(b).get("completed")))
    assert h.job(b)["completed"] and statuses(h.report(b)) == {"ACCEPTED": 30}
    pump.run_for(3)  # the paused chunks come back (pause_poll_s) and are handed back again
    assert len(calls_of(h, "A-")) == sent_at_pause
    assert h.sim.stats()["requests"] - requests_at_pause == b_left // 10  # b's remaining requests only
    assert not h.job(a).get("completed")
    # ... handed back, never failed: no receive spent, nothing towards the DLQ
    assert pump.receives[a.job_id] > 5 and pump.max_receive_count == 1 and h.dlq_depth() == 0
    assert control().apply("pause", ControlTarget(job=a.job_id))["already"] is True
    # When it is resumed
    assert control().apply("resume", ControlTarget(job=a.job_id)) == {"action": "resume", "job": a.job_id,
                                                                "state": "running", "already": False}
    pump.run_for(30, until=lambda: bool(h.job(a).get("completed")))
    # Then it completes, nobody called twice, every row accepted once
    stats = h.sim.stats()
    assert h.job(a)["completed"] and statuses(h.report(a)) == {"ACCEPTED": 60}
    assert stats["called_twice"] == [] and len(calls_of(h, "A-")) == 60
    assert pump.max_receive_count == 1 and h.dlq_depth() == 0


def test_a_pause_written_during_the_rate_limit_wait_stops_the_request_that_waited(make_harness):
    # Given a chunk that must wait for its rate-limit slot (10 rows per second)
    h = make_harness(batch_size=10, records_per_minute=600, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(40, prefix="A"))
    h.ingest(a)
    service = wiring.dispatch_service()
    real_sleep, paused, at_pause = service.sleep, [], []

    def sleep_and_pause(seconds: float) -> None:  # the operator pauses while the chunk sleeps
        if not paused:
            paused.append(control().apply("pause", ControlTarget(job=a.job_id)))
            at_pause.append(h.sim.stats()["requests"])  # before the sleeping request could go out
        real_sleep(seconds)

    service.sleep = sleep_and_pause
    pump = Pump(h)
    pump.run_for(10, until=lambda: bool(paused))
    pump.run_for(4)
    # Then the request that was waiting was not made, nor any after it
    assert paused and h.sim.stats()["requests"] == at_pause[0]
    assert not h.job(a).get("completed") and pump.max_receive_count == 1
    control().apply("resume", ControlTarget(job=a.job_id))
    pump.run_for(30, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"ACCEPTED": 40} and h.sim.stats()["called_twice"] == []


def test_a_pause_while_a_chunk_is_split_for_a_bad_record_lets_that_chunk_finish_and_sends_no_row_twice(
        make_harness):
    # Given a file of two 16-row chunks, the first with a number Phonon refuses (the chunk is
    # sent in halves to find it), and a pause that arrives right after its first request
    h = make_harness(batch_size=16, pause_poll_s=1)
    h.sim.set_faults(FaultPlan(record_error_numbers=["919800000007"]))
    a = h.upload("a.csv", csv_rows(32, prefix="A"))
    h.ingest(a)
    service = wiring.dispatch_service()
    make_client, paused = service._client_factory, []

    class PausingClient:
        def __init__(self, client):
            self.client = client

        def post(self, body: bytes):
            answer = self.client.post(body)
            if not paused:
                paused.append(control().apply("pause", ControlTarget(job=a.job_id)))
            return answer

    service._client_factory = lambda: PausingClient(make_client())
    pump = Pump(h)
    pump.run_for(5)
    # Then the split chunk was finished (its halves were sent once each), the next one waits
    first = h.sim.stats()
    assert paused and len(calls_of(h, "A-")) == 15 and first["called_twice"] == []
    assert not h.job(a).get("completed") and pump.max_receive_count == 1
    pump.run_for(3)
    assert h.sim.stats()["requests"] == first["requests"]
    control().apply("resume", ControlTarget(job=a.job_id))
    pump.run_for(20, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"ACCEPTED": 31, "FAILED": 1} and h.sim.stats()["called_twice"] == []


def test_a_cancelled_job_sends_nothing_after_the_cancel_and_its_unsent_rows_are_cancelled(make_harness):
    # Given a file part-sent
    h = make_harness(batch_size=10)
    a, b = two_files(h)
    pump = Pump(h)
    pump.run_for(20, until=lambda: len(calls_of(h, "A-")) >= 10)
    # When the operator cancels it
    answer = control().apply("cancel", ControlTarget(job=a.job_id), "sent to the wrong list")
    assert answer == {"action": "cancel", "job": a.job_id, "state": "cancelled", "already": False}
    sent = set(calls_of(h, "A-"))
    requests_at_cancel, b_left = h.sim.stats()["requests"], 30 - len(calls_of(h, "B-"))
    pump.run_for(30, until=lambda: bool(h.job(a).get("completed") and h.job(b).get("completed")))
    # Then no request of it was started after the cancel (only the other file's 10-row chunks);
    # what was sent is ACCEPTED, the rest CANCELLED with the reason
    assert set(calls_of(h, "A-")) == sent
    assert h.sim.stats()["requests"] - requests_at_cancel == b_left // 10
    report = h.report(a)
    accepted = {r["client-identifier"] for r in report if r["status"] == "ACCEPTED"}
    assert accepted == sent and len(report) == 60
    cancelled = [r for r in report if r["status"] == "CANCELLED"]
    assert len(cancelled) == 60 - len(sent) and all(r["reason"] == "sent to the wrong list" for r in cancelled)
    assert h.job(a)["status"] == "CANCELLED" and h.job(a)["counts"]["cancelled"] == len(cancelled)
    assert statuses(h.report(b)) == {"ACCEPTED": 30}  # the other file was not touched
    assert control().apply("cancel", ControlTarget(job=a.job_id))["already"] is True
    assert h.dlq_depth() == 0


def test_a_paused_job_can_be_cancelled_and_its_chunks_settle_without_a_resume(make_harness):
    h = make_harness(batch_size=10, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(30, prefix="A"))
    h.ingest(a)
    control().apply("pause", ControlTarget(job=a.job_id))
    pump = Pump(h)
    pump.run_for(2)
    control().apply("cancel", ControlTarget(job=a.job_id))
    pump.run_for(20, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"CANCELLED": 30} and h.sim.stats()["requests"] == 0


def test_a_paused_flow_holds_every_job_of_the_flow_until_resumed(make_harness):
    h = make_harness(batch_size=10, pause_poll_s=1)
    assert control().apply("pause", ControlTarget(flow=DEMO_FLOW_ID)) == {
        "action": "pause", "flow": DEMO_FLOW_ID, "state": "paused", "already": False}
    a, b = two_files(h, 20, 20)
    pump = Pump(h)
    pump.run_for(3)
    assert h.sim.stats()["requests"] == 0 and pump.max_receive_count == 1
    control().apply("resume", ControlTarget(flow=DEMO_FLOW_ID))
    pump.run_for(30, until=lambda: bool(h.job(a).get("completed") and h.job(b).get("completed")))
    assert statuses(h.report(a)) == statuses(h.report(b)) == {"ACCEPTED": 20}


def test_unknown_targets_and_bad_requests_are_clear_errors(make_harness):
    h = make_harness()
    a = h.upload("a.csv", csv_rows(3, prefix="A"))
    h.ingest(a)
    with pytest.raises(UnknownTarget, match="no such job: nosuch"):
        control().apply("pause", ControlTarget(job="nosuch"))
    with pytest.raises(UnknownTarget, match="no job for key zzz.csv"):
        control().apply("pause", ControlTarget(key="zzz.csv"))
    with pytest.raises(UnknownTarget, match="version v0"):
        control().apply("pause", ControlTarget(key="a.csv", version="v0"))
    with pytest.raises(ControlError, match="unknown action"):
        control().apply("stop", ControlTarget(job=a.job_id))
    with pytest.raises(ControlError, match="a flow can be paused, resumed or capped"):
        control().apply("cancel", ControlTarget(flow=DEMO_FLOW_ID))
    with pytest.raises(ControlError, match="exactly one"):
        control().apply("pause", {"job": a.job_id, "flow": DEMO_FLOW_ID})
    # "a.csv" is "incoming/a.csv", with or without its version
    assert control().apply("pause", ControlTarget(key="a.csv", version=a.version_id))["job"] == a.job_id


def test_the_newest_upload_of_a_key_is_the_one_a_key_names(make_harness):
    h = make_harness()
    first = h.upload("a.csv", csv_rows(3, prefix="A"))
    h.ingest(first)
    time.sleep(1.1)  # upload times have whole seconds in the key index's order
    second = h.upload("a.csv", csv_rows(4, prefix="B"))
    h.ingest(second)
    assert control().apply("pause", ControlTarget(key="incoming/a.csv"))["job"] == second.job_id
    assert control().apply("pause", ControlTarget(key="incoming/a.csv", version=first.version_id))["job"] == first.job_id


# ------------------------------------------------------------------ through the ingest handler
def ingest_event(event: dict) -> dict:
    import ingest_handler

    return ingest_handler.handler(event, Ctx("ingest"))


def control_event(detail: dict) -> dict:
    return {"version": "0", "id": "e1", "detail-type": "Outbound Control", "source": "com.example.ops",
            "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}


def test_the_control_event_pauses_resumes_and_cancels_and_bad_ones_are_answered(make_harness):
    h = make_harness(batch_size=10, pause_poll_s=1)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    out = ingest_event(control_event({"action": "pause", "key": "incoming/a.csv", "reason": "hold on"}))
    assert out["files"] == [{"event": "Outbound Control", "status": "controlled", "control": {
        "action": "pause", "job": a.job_id, "key": "incoming/a.csv", "version": a.version_id, "state": "paused",
        "already": False}}]
    assert h.job(a)["paused_reason"] == "hold on"
    Pump(h).run_for(2)
    assert h.sim.stats()["requests"] == 0
    assert ingest_event(control_event({"action": "resume", "job": a.job_id}))["files"][0]["control"]["state"] == \
        "running"
    assert ingest_event(control_event({"action": "cancel", "job": a.job_id}))["files"][0]["control"]["state"] == \
        "cancelled"
    Pump(h).run_for(20, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"CANCELLED": 20}
    # Bad requests are answered, never raised (the event is not retried for them)
    for detail, status in (({"action": "pause", "job": "nosuch"}, "not found"),
                           ({"action": "explode", "job": a.job_id}, "refused"),
                           ({"action": "pause"}, "refused"), ({"action": "pause", "job": 7}, "refused"),
                           # names no key of ours can have (DynamoDB would refuse the read itself)
                           ({"action": "pause", "job": "J" * 3000}, "refused"),
                           ({"action": "pause", "key": "k" * 2000}, "refused"),
                           ({"action": "pause", "flow": "F" * 3000}, "refused"),
                           ("not a dict", "refused")):
        assert ingest_event(control_event(detail))["files"][0]["status"] == status  # type: ignore[arg-type]


@pytest.mark.parametrize("marker", ["cancel/incoming/a.csv", "cancel/a.csv"])
@pytest.mark.parametrize("shape", ["notification", "eventbridge"])
def test_a_file_under_cancel_cancels_the_newest_job_of_that_key(make_harness, marker, shape):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    put = h.s3.put_object(Bucket=h.bucket, Key=marker, Body=b"")
    if shape == "notification":
        event = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                              "eventName": "ObjectCreated:Put", "eventTime": "2026-11-30T10:00:00Z",
                              "s3": {"bucket": {"name": h.bucket}, "object": {
                                  "key": marker, "size": 0, "versionId": put.get("VersionId")}}}]}
    else:
        event = {"version": "0", "id": "e2", "detail-type": "Object Created", "source": "aws.s3",
                 "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1",
                 "resources": [], "detail": {"bucket": {"name": h.bucket}, "object": {
                     "key": marker, "size": 0, "version-id": put.get("VersionId")}, "reason": "PutObject"}}
    out = ingest_event(event)
    assert out["files"] == [{"key": marker, "cancels": "incoming/a.csv", "status": "controlled", "control": {
        "action": "cancel", "job": a.job_id, "key": "incoming/a.csv", "version": a.version_id,
        "state": "cancelled", "already": False}}]
    Pump(h).run_for(20, until=lambda: bool(h.job(a).get("completed")))
    report = h.report(a)
    assert statuses(report) == {"CANCELLED": 20} and h.sim.stats()["requests"] == 0
    assert report[0]["reason"] == f"cancelled by a file under cancel/: {marker}"
    # a marker for a key with no job is answered "not found"
    event_missing = json.loads(json.dumps(event).replace(marker, "cancel/nothing.csv"))
    assert ingest_event(event_missing)["files"][0]["status"] == "not found"


# ------------------------------------------------------------------ the store, both kinds
def test_control_items_on_both_stores(any_store):
    jobs = any_store.jobs
    assert jobs.control("nosuch", "Flow1234") == Control()
    assert jobs.pause_job("nosuch", "x") is False
    jobs.create_job("j1", {"key": "incoming/a.csv"})
    assert jobs.pause_job("j1", "hold") is True and jobs.pause_job("j1", "again") is False
    assert jobs.control("j1", "Flow1234") == Control("", "hold")
    assert jobs.resume_job("j1") is True and jobs.resume_job("j1") is False
    assert jobs.control("j1", "Flow1234") == Control()
    assert jobs.pause_flow("Flow1234", "carrier trouble") is True and jobs.pause_flow("Flow1234", "x") is False
    assert jobs.flow_paused("Flow1234") == "carrier trouble" and jobs.flow_paused("Other123") == ""
    assert jobs.control("j1", "Flow1234") == Control("", "flow Flow1234 paused: carrier trouble")
    assert jobs.control("j1", "Other123") == Control()
    assert jobs.resume_flow("Flow1234") is True and jobs.resume_flow("Flow1234") is False
    assert jobs.cancel_job("j1", "stop") is True
    assert jobs.control("j1", "Flow1234") == Control("stop", "")
    jobs.create_job("j2", {})
    jobs.update_job("j2", completed=True)
    assert jobs.pause_job("j2", "late") is False


def test_caps_on_both_stores(any_store):
    jobs = any_store.jobs
    # Given a job and its flow, neither capped
    jobs.create_job("j1", {"key": "incoming/a.csv"})
    assert jobs.control("j1", "Flow1234") == Control() and jobs.flow_control("Flow1234").cap is None
    # When the job is capped (and capped again at the same value)
    assert jobs.set_job_cap("j1", 100) is True and jobs.set_job_cap("j1", 100) is False
    # Then control() carries the cap, and the job item holds it
    assert jobs.control("j1", "Flow1234") == Control(job_cap=100) and jobs.control("j1").cap == 100
    assert jobs.get_job("j1")["rate_cap"] == 100
    # When the flow is capped too: both come with the same reads, the smaller one binds
    assert jobs.set_flow_cap("Flow1234", 60) is True and jobs.set_flow_cap("Flow1234", 60) is False
    assert jobs.flow_control("Flow1234").cap == 60 and jobs.flow_control("Other123").cap is None
    ctl = jobs.control("j1", "Flow1234")
    assert (ctl.job_cap, ctl.flow_cap, ctl.cap) == (100, 60, 60)
    assert jobs.set_job_cap("j1", 30) is True and jobs.control("j1", "Flow1234").cap == 30
    # A flow's pause and its cap live side by side in its control item
    assert jobs.pause_flow("Flow1234", "hold") is True and jobs.flow_control("Flow1234").cap == 60
    assert jobs.resume_flow("Flow1234") is True and jobs.flow_control("Flow1234").cap == 60
    # When the caps are removed (twice: the second changes nothing)
    assert jobs.set_job_cap("j1", None) is True and jobs.set_job_cap("j1", None) is False
    assert jobs.set_flow_cap("Flow1234", None) is True and jobs.set_flow_cap("Flow1234", None) is False
    assert jobs.control("j1", "Flow1234") == Control() and "rate_cap" not in jobs.get_job("j1")
    # An unknown job is never created by a cap; a flow without a control item can be capped
    assert jobs.set_job_cap("nosuch", 10) is False and jobs.get_job("nosuch") is None
    assert jobs.set_flow_cap("Fresh123", 10) is True and jobs.control("j1", "Fresh123").flow_cap == 10


# ------------------------------------------------------------------ targets no job or flow can be
@pytest.mark.parametrize("flow", ["Flow123", "Flow12345", "x" * 128, "Flow-123", "98765432101"])
def test_a_control_event_naming_no_possible_flow_is_refused_and_pauses_nothing(make_harness, flow):
    make_harness()
    out = ingest_event(control_event({"action": "pause", "flow": flow}))["files"]
    assert [f["status"] for f in out] == ["refused"]
    assert "is not a Phonon flow id (8 letters or digits)" in out[0]["reason"]
    assert "98765432101" not in out[0]["reason"]  # a value not shaped like a flow id is never echoed
    assert wiring.store().jobs.flow_paused(flow) == ""
    # a flow id is taken trimmed, as every name is
    assert ingest_event(control_event({"action": "pause", "flow": f" {DEMO_FLOW_ID} "}))["files"][0]["control"] == {
        "action": "pause", "flow": DEMO_FLOW_ID, "state": "paused", "already": False}


def test_a_key_over_s3s_1024_bytes_is_refused_before_any_read(make_harness):
    # 1,000 CJK characters: under 1,024 characters, ~3,000 bytes (S3 takes 1,024; DynamoDB a
    # 2,048-byte partition key: it would refuse the read with a ValidationException)
    make_harness()
    for detail in ({"action": "cancel", "key": "名" * 1000}, {"action": "pause", "key": "a.csv", "version": "版" * 400}):
        out = ingest_event(control_event(detail))["files"]
        assert out[0]["status"] == "refused" and "1024 bytes" in out[0]["reason"]
    # a key of 1,024 bytes is a key: looked up, not refused
    assert ingest_event(control_event({"action": "cancel", "key": "k" * 1024}))["files"][0]["status"] == "not found"
    # text no key can hold (a lone surrogate, which JSON can carry) is refused, not raised
    assert ingest_event(control_event({"action": "pause", "key": "a\ud800.csv"}))["files"][0]["status"] == "refused"


def _client_error(code: str):
    from botocore.exceptions import ClientError

    def fail(*args, **kwargs):
        raise ClientError({"Error": {"Code": code, "Message": "refused: incoming/secret-919812345678.csv"}},
                          "GetItem")
    return fail


def test_aws_refusing_a_control_request_as_given_is_answered_other_aws_errors_raise_for_a_retry(
        make_harness, monkeypatch):
    h = make_harness()
    a = h.upload("a.csv", csv_rows(3, prefix="A"))
    h.ingest(a)
    jobs = wiring.store().jobs
    monkeypatch.setattr(jobs, "get_job", _client_error("ValidationException"))
    out = ingest_event(control_event({"action": "pause", "job": a.job_id}))["files"]
    assert out == [{"event": "Outbound Control", "status": "refused",
                    "reason": "AWS refused the request as given (ValidationException)"}]
    # the same for a cancel/ marker, which the S3 event's other work goes on after
    put = h.s3.put_object(Bucket=h.bucket, Key="cancel/a.csv", Body=b"")
    marker = h.s3_event(a)
    marker["Records"][0]["s3"]["object"].update(key="cancel/a.csv", versionId=put.get("VersionId"))
    assert ingest_event(marker)["files"][0]["status"] == "refused"
    # throttling (or a 5xx) may pass: the invocation fails and EventBridge tries again
    from botocore.exceptions import ClientError

    monkeypatch.setattr(jobs, "get_job", _client_error("ProvisionedThroughputExceededException"))
    with pytest.raises(ClientError):
        ingest_event(control_event({"action": "pause", "job": a.job_id}))


def test_of_two_uploads_within_one_second_a_key_names_the_later_one(make_harness):
    # Given two uploads of one key whose events carry the same whole-second time (EventBridge's
    # `time`), the second's job id sorting before the first's (the index's own order)
    from dataclasses import replace

    h = make_harness()
    first = h.upload("a.csv", csv_rows(3, prefix="A"))
    second = h.upload("a.csv", csv_rows(4, prefix="B"))
    while second.job_id > first.job_id:  # uploads not ingested are no jobs: they do not count
        second = h.upload("a.csv", csv_rows(4, prefix="B"))
    for obj in (first, second):
        h.ingest(replace(obj, event_time="2026-11-30T10:00:05Z"))
    assert h.job(first)["uploaded_at"] == h.job(second)["uploaded_at"]
    # Then the key's newest job is the second upload's, whoever asks
    assert control().apply("pause", ControlTarget(key="a.csv"))["job"] == second.job_id
    assert [i["job"] for i in wiring.store().jobs.jobs_for_key(h.bucket, "incoming/a.csv")] == [
        first.job_id, second.job_id]


@pytest.mark.parametrize("detail", [{"action": "cancel", "key": "incoming/a.csv", "reason": "wrong list"},
                                    {"action": "pause", "key": "incoming/a.csv", "reason": "hold on"}])
def test_a_control_event_whose_invocations_all_failed_is_carried_out_from_the_failure_queue(make_harness, detail):
    """Lambda retries a failed asynchronous invocation twice, then puts the event on the
    ingest failure queue (its on-failure destination). A pause or cancel there is carried out
    once more, not dropped: a lost cancel keeps calling people."""
    from .test_ingest_events import destination_record

    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)
    out = ingest_event(destination_record(h, control_event(detail), error_type="ThrottlingException"))
    assert out["files"] == [{"event": "Outbound Control", "status": "controlled", "control": {
        "action": detail["action"], "job": a.job_id, "key": "incoming/a.csv", "version": a.version_id,
        "state": {"cancel": "cancelled", "pause": "paused"}[detail["action"]], "already": False}}]
    reason_attr = {"cancel": "cancelled_reason", "pause": "paused_reason"}[detail["action"]]
    assert detail["reason"] in h.job(a)[reason_attr]


def test_a_failed_control_event_that_fails_again_from_the_failure_queue_is_raised_for_sqs_to_retry(
        make_harness, monkeypatch):
    from phonon_outbound.control import ControlService

    from .test_ingest_events import destination_record

    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(20, prefix="A"))
    h.ingest(a)

    def still_failing(self, *args, **kwargs):
        raise ConnectionError("DynamoDB unreachable")

    monkeypatch.setattr(ControlService, "apply", still_failing)
    with pytest.raises(ConnectionError):  # the record fails: SQS retries it, then its DLQ (alarmed)
        ingest_event(destination_record(h, control_event({"action": "cancel", "job": a.job_id})))


# ------------------------------------------------------------------ a cap on one job's rate
def requests_by_file(h) -> dict[str, list[float]]:
    """The moments (the simulator's clock) of the requests Phonon accepted, per file (its rows'
    prefix): the simulator's own request log, matched in order to the calls each request held."""
    calls = h.sim.accepted_calls()
    out: dict[str, list[float]] = {}
    at = 0
    for moment, n in h.sim.stats()["accepted"]:
        out.setdefault(calls[at]["client-identifier"].split("-")[0], []).append(moment)
        at += n
    return out


def test_a_job_capped_by_the_control_event_sends_no_faster_than_its_cap_and_slows_no_other_job(make_harness):
    # Given two files in 10-row chunks, under the global limit of 30,000 calls a minute
    h = make_harness(batch_size=10)
    a, b = two_files(h, a_rows=60, b_rows=60)
    # When the operator caps the first at 120 calls a minute (one 10-call chunk every 5 s) by the event
    out = ingest_event(control_event({"action": "limit", "key": "incoming/a.csv", "per_minute": 120}))
    assert out["files"] == [{"event": "Outbound Control", "status": "controlled", "control": {
        "action": "limit", "job": a.job_id, "key": "incoming/a.csv", "version": a.version_id, "state": "running",
        "already": False, "rate_cap": 120}}]
    pump = Pump(h)
    pump.run_for(16, until=lambda: len(calls_of(h, "A-")) >= 40)
    # Then the other file went at once, all of it, in far less time than the cap would allow it
    times = requests_by_file(h)
    assert h.job(b).get("completed") and statuses(h.report(b)) == {"ACCEPTED": 60}
    assert times["B"][-1] - times["B"][0] < 12.0  # at 120/min its 6 requests would take 25 s
    # ... while the capped one was sent a chunk at a time, one per 5 s at the most, as Phonon saw it
    sent_a = times["A"]
    assert 3 <= len(sent_a) <= 5, sent_a
    gaps = [later - earlier for earlier, later in zip(sent_a, sent_a[1:], strict=False)]
    assert min(gaps) >= 4.0, gaps  # 5 s apart, less the simulator's latency spread
    assert (len(sent_a) - 1) * 10 / ((sent_a[-1] - sent_a[0]) / 60) <= 120 * 1.05
    # ... its waiting chunks handed back, never failed: no receive spent, nothing towards the DLQ
    assert pump.max_receive_count == 1 and h.dlq_depth() == 0 and not h.job(a).get("completed")
    # When the cap is removed (the event's "none"), the rest goes at the global rate
    out = ingest_event(control_event({"action": "limit", "job": a.job_id, "per_minute": "none"}))
    assert out["files"][0]["control"]["rate_cap"] is None
    pump.run_for(30, until=lambda: bool(h.job(a).get("completed")))
    assert statuses(h.report(a)) == {"ACCEPTED": 60} and h.sim.stats()["called_twice"] == []


def test_a_bad_cap_in_the_control_event_is_answered_and_changes_nothing(make_harness):
    h = make_harness(batch_size=10)
    a = h.upload("a.csv", csv_rows(10, prefix="A"))
    h.ingest(a)
    for detail, why in (({"action": "limit", "job": a.job_id}, "limit needs a value"),
                        ({"action": "limit", "job": a.job_id, "per_minute": "fast"}, "a whole number from 1 to 30,000"),
                        ({"action": "limit", "job": a.job_id, "per_minute": 30_001}, "out of range"),
                        ({"action": "limit", "job": a.job_id, "per_minute": -3}, "out of range"),
                        ({"action": "limit", "job": a.job_id, "per_minute": "9" * 10_000}, "out of range"),
                        ({"action": "limit", "job": a.job_id, "per_minute": [100]}, "a whole number from 1 to 30,000")):
        [answer] = ingest_event(control_event(detail))["files"]
        assert answer["status"] == "refused" and why in answer["reason"], answer
    assert "rate_cap" not in h.job(a)
