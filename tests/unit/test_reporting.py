"""Outcomes in the report and the report function (reporting.py, jobs.py, webhook.py) on the
in-memory store and moto's S3 and SQS, with a clock the test moves: the outcome columns, the
debounce (two outcomes within a minute queue one write), the final write once every accepted
call has its outcome or the wait is over, and a writer that died half-way retried by the next
trigger. The flow-end pushes go through the real `WebhookService`."""

from __future__ import annotations

import copy
import csv
import io
import json

import boto3
import pytest

from phonon_outbound.jobs import JobFinisher
from phonon_outbound.reporting import ReportRequests, ReportService
from phonon_outbound.status import Status
from phonon_outbound.store.memory import MemoryStore
from phonon_outbound.webhook import WebhookService, parse_push, row_outcome

from .test_services_on_fakes import BUCKET, CSV_KEY, SUMMARY_KEY, T0, Clock, report

JOB = "J1"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return MemoryStore(clock=clock)


@pytest.fixture
def aws(aws_env):
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        yield s3, sqs, sqs.create_queue(QueueName="reports")["QueueUrl"]


def summary(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=SUMMARY_KEY)["Body"].read())


def settled_job(store, accepted: int = 3) -> None:
    """A settled job: rows 1..accepted ACCEPTED in chunk 0, then one FAILED row."""
    rows = [{"row": r, "status": Status.ACCEPTED.value, "cid": f"C{r}", "request_id": "req", "phonon_uuid": "",
             "reason": "", "numbers": []} for r in range(1, accepted + 1)]
    rows.append({"row": accepted + 1, "status": Status.FAILED.value, "cid": "CF", "request_id": "req",
                 "reason": "503", "numbers": []})
    store.jobs.create_job(JOB, {"key": "in/a.csv", "bucket": BUCKET, "flow": "Flow0001", "total_rows": accepted + 1,
                                "ingest_done": True, "chunks_total": 1, "report_csv_key": CSV_KEY,
                                "report_summary_key": SUMMARY_KEY, "status": "DISPATCHING"})
    store.ledger.claim_chunk(JOB, 0, 120)
    store.rows.put_outcomes(JOB, 0, rows, at=int(T0))
    store.ledger.settle_chunk(JOB, 0, "DONE")
    store.ledger.count_settled(JOB, 0, accepted=accepted, failed=1)


def push(row: int, uuid: str | None = None, **attempt) -> str:
    doc = {"phonon-uuid": uuid or f"uuid-{row}", "keys": [{"name": "$flow.key.OutboundRef", "value": f"{JOB}.{row}"}],
           "callDetails": [{"startTime": "2026-11-30T10:00:00+05:30", "connectTime": "2026-11-30T10:00:05+05:30",
                            "endTime": "2026-11-30T10:00:48+05:30", "duration": "43000",
                            "hangupCause": "NORMAL_CLEARING", "dtmfPressesd": ["1", "9"], **attempt}]}
    return json.dumps(doc)


def services(store, aws, clock, queued: bool = False, debounce_s: float = 60, final_wait_s: float = 3600):
    s3, sqs, url = aws
    finisher = JobFinisher(store, s3, BUCKET, final_wait_s=final_wait_s, clock=clock)
    requests = ReportRequests(store, lambda: finisher, sqs if queued else None, url if queued else "", debounce_s,
                              clock=clock)
    return finisher, requests, ReportService(store, finisher, requests, final_wait_s, clock=clock)


def queued(aws) -> list[dict]:
    """The report requests on the queue, delayed ones included (read by their attributes)."""
    _, sqs, url = aws
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return [{"visible": int(attrs["ApproximateNumberOfMessages"]),
             "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"])}]


# ------------------------------------------------------------------------------- the push → the outcome
@pytest.mark.parametrize(("attempts", "expected"), [
    ([{"connectTime": "2026-11-30T10:00:05+05:30", "endTime": "2026-11-30T10:00:48+05:30",
       "hangupCause": "NORMAL_CLEARING"}], ("ANSWERED", 43)),
    ([{"hangupCause": "NO_ANSWER", "duration": "0"}], ("NO_ANSWER", 0)),
    ([{"hangupCause": "USER_BUSY"}], ("BUSY", 0)),
    ([{"hangupCause": "UNALLOCATED_NUMBER"}], ("FAILED", 0)),
    # a second number answered: the chosen attempt is the connected one, attempts counts both
    ([{"hangupCause": "USER_BUSY"}, {"connectTime": "2026-11-30T10:01:00+05:30", "duration": "20000",
                                      "hangupCause": "NORMAL_CLEARING"}], ("ANSWERED", 20)),
])
def test_a_push_maps_to_the_outcome_vocabulary_by_connect_and_hangup_cause(attempts, expected):
    p = parse_push(json.dumps({"phonon-uuid": "u1", "callDetails": attempts}))
    out = row_outcome(p, None, "webhook", 5)
    assert (out["outcome"], out["duration"]) == expected
    assert out["attempts"] == len(attempts) and out["outcome_at"] == 5 and out["outcome_src"] == "webhook"


def test_sms_and_email_only_pushes_are_delivered_or_not_and_an_empty_push_is_completed():
    def outcome_of(doc: dict) -> dict:
        return row_outcome(parse_push(json.dumps({"phonon-uuid": "u1", **doc})), None, "pull", 5)

    assert outcome_of({"smsDetails": [{"deliveryStatus": "DELIVERED"}]})["outcome"] == "DELIVERED"
    assert outcome_of({"emailDetails": [{"status": "bounced"}]})["outcome"] == "NOT_DELIVERED"
    assert outcome_of({"smsDetails": [{"deliveryStatus": "UNDELIVERED"}]})["delivery"] == "UNDELIVERED"
    assert outcome_of({})["outcome"] == "COMPLETED"
    # the SMPP delivery receipt's spellings
    assert outcome_of({"smsDetails": [{"deliveryStatus": "DELIVRD"}]})["outcome"] == "DELIVERED"
    assert outcome_of({"smsDetails": [{"deliveryStatus": "UNDELIV"}]})["outcome"] == "NOT_DELIVERED"
    assert outcome_of({"smsDetails": [{"deliveryStatus": "EXPIRED"}]})["outcome"] == "NOT_DELIVERED"


def test_a_flow_that_sends_an_sms_and_an_email_reports_both_and_is_delivered_when_either_arrived():
    both = row_outcome(parse_push(json.dumps({"phonon-uuid": "u1", "smsDetails": [{"deliveryStatus": "UNDELIVERED"}],
                                              "emailDetails": [{"status": "opened"}]})), None, "webhook", 5)
    assert both["outcome"] == "DELIVERED"
    assert both["delivery"] == "sms: UNDELIVERED; email: opened"
    neither = row_outcome(parse_push(json.dumps({"phonon-uuid": "u1", "smsDetails": [{"deliveryStatus": "sent"},
                                                                                     {"deliveryStatus": "FAILED"}],
                                                 "emailDetails": [{"status": "bounced"}]})), None, "webhook", 5)
    assert neither["outcome"] == "NOT_DELIVERED"  # the SMS's last status counts, not its first
    assert neither["delivery"] == "sms: FAILED; email: bounced"


def test_the_dtmf_of_the_chosen_attempt_is_recorded():
    body = json.dumps({"phonon-uuid": "u1", "callDetails": [
        {"hangupCause": "NO_ANSWER", "dtmfPressesd": ["5"]},
        {"connectTime": "2026-11-30T10:00:05+05:30", "duration": "1000", "dtmfPressesd": ["1", "#"]}]})
    assert row_outcome(parse_push(body), body, "webhook", 5)["dtmf"] == "1#"


# ------------------------------------------------------------------------------- outcomes in the report
def test_the_report_shows_outcomes_pending_rows_and_empty_cells_for_other_statuses(store, aws, clock):
    settled_job(store)
    finisher, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(1))  # before the first write: the first write includes it
    assert finisher.settled(JOB) is True
    rows = report(aws[0])
    assert list(rows[0])[6:] == ["outcome", "answered", "duration_s", "attempts", "hangup_cause", "dtmf",
                                 "ended_at", "delivery"]
    assert [(r["outcome"], r["answered"], r["duration_s"], r["dtmf"]) for r in rows] == [
        ("ANSWERED", "yes", "43", "19"), ("PENDING", "", "", ""), ("PENDING", "", "", ""), ("", "", "", "")]
    assert rows[0]["phonon-uuid"] == "uuid-1" and rows[0]["hangup_cause"] == "NORMAL_CLEARING"
    assert summary(aws[0])["outcomes"] == {"arrived": 1, "pending": 2, "final": False}
    assert list(store.jobs.awaiting_outcomes()) == [JOB]


def test_a_replayed_push_counts_once_and_a_pulled_record_keeps_the_webhooks_source(store, aws, clock):
    settled_job(store)
    _, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    for _ in range(3):
        assert hook.handle(push(2))["matched"] is True
    hook.handle(push(2), source="pull")
    assert store.jobs.get_job(JOB)["outcomes"] == 1
    row = next(r for r in store.rows.iter_rows(JOB) if r["row"] == 2)
    assert row["outcome_src"] == "webhook" and row["outcome"] == "ANSWERED"
    hook.handle(push(3), source="pull")
    assert next(r for r in store.rows.iter_rows(JOB) if r["row"] == 3)["outcome_src"] == "pull"
    assert store.jobs.get_job(JOB)["outcomes"] == 2


# ------------------------------------------------------------------------------- the debounce
def test_two_outcomes_within_a_minute_queue_one_write_at_the_debounce_boundary(store, aws, clock):
    settled_job(store)
    finisher, requests, _ = services(store, aws, clock, queued=True)
    finisher.settled(JOB)  # the first write, at T0
    hook = WebhookService(store, reports=requests)
    clock.t = T0 + 10
    hook.handle(push(1))
    clock.t = T0 + 20
    hook.handle(push(2))
    assert queued(aws) == [{"visible": 0, "delayed": 1}]  # one write, delayed to T0 + 60
    assert store.jobs.get_job(JOB)["report_next_at"] == int(T0) + 60
    # after the booked write, the next outcome books the next minute, not at once
    clock.t = T0 + 61
    hook.handle(push(3))
    assert store.jobs.get_job(JOB)["report_next_at"] == int(T0) + 120
    assert queued(aws)[0]["visible"] + queued(aws)[0]["delayed"] == 2


def test_a_report_request_sqs_refused_gives_the_booking_back_and_the_next_outcome_books_again(store, aws, clock):
    settled_job(store)
    finisher, requests, _ = services(store, aws, clock, queued=True)
    finisher.settled(JOB)  # the first write, at T0
    hook = WebhookService(store, reports=requests)
    real_send = requests.send

    def refused(*args, **kwargs):
        raise ConnectionError("SQS went away")

    requests.send = refused  # type: ignore[method-assign]
    clock.t = T0 + 70
    assert hook.handle(push(1))["matched"] is True  # the push is taken: its outcome is stored
    assert next(r for r in store.rows.iter_rows(JOB) if r["row"] == 1)["outcome"] == "ANSWERED"
    assert store.jobs.get_job(JOB).get("report_next_at", 0) == 0  # no write booked that never comes
    requests.send = real_send  # type: ignore[method-assign]
    hook.handle(push(2))
    assert store.jobs.get_job(JOB)["report_next_at"] == int(T0) + 70
    assert queued(aws)[0]["visible"] + queued(aws)[0]["delayed"] == 1


def test_an_outcome_before_the_first_write_books_nothing(store, aws, clock):
    settled_job(store)
    _, requests, _ = services(store, aws, clock, queued=True)
    WebhookService(store, reports=requests).handle(push(1))
    assert queued(aws) == [{"visible": 0, "delayed": 0}] and store.jobs.get_job(JOB).get("report_next_at") is None


def test_settled_asks_the_report_function_once_the_job_has_settled(store, aws, clock):
    settled_job(store)
    _, requests, service = services(store, aws, clock, queued=True)
    assert requests.settled(JOB, {"ingest_done": True, "chunks_total": 2, "chunks_settled": 1}) is False
    assert queued(aws) == [{"visible": 0, "delayed": 0}]
    requests.settled(JOB, store.jobs.get_job(JOB))
    _, sqs, url = aws
    message = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert service.handle(message["Body"]) == "written" and len(report(aws[0])) == 4
    assert service.handle("not json") == "dropped"


# ------------------------------------------------------------------------------- the final write
def test_the_write_after_every_accepted_call_has_its_outcome_is_final(store, aws, clock):
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock)
    finisher.settled(JOB)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(1))
    hook.handle(push(2, hangupCause="NO_ANSWER", connectTime="", duration="0"))
    assert store.jobs.get_job(JOB).get("report_final") is False  # the second came within the debounce
    # the schedule: the job's outcomes are all in (counter = accepted rows): its final write
    assert service.sweep() == [JOB]
    assert [r["outcome"] for r in report(aws[0])] == ["ANSWERED", "NO_ANSWER", ""]
    assert store.jobs.get_job(JOB)["report_final"] is True and list(store.jobs.awaiting_outcomes()) == []
    assert summary(aws[0])["outcomes"] == {"arrived": 2, "pending": 0, "final": True}
    assert service.sweep() == []


def test_the_outcome_of_a_failed_row_phonon_ran_does_not_stand_in_for_an_accepted_rows(store, aws, clock):
    from phonon_outbound.records import Job

    settled_job(store, accepted=2)  # rows 1, 2 ACCEPTED; row 3 FAILED (Phonon may have run it anyway)
    finisher, requests, service = services(store, aws, clock)
    finisher.settled(JOB)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(1))
    assert hook.handle(push(3))["matched"] is True  # the FAILED row's outcome is stored...
    assert next(r for r in store.rows.iter_rows(JOB) if r["row"] == 3)["outcome"] == "ANSWERED"
    # ...but not counted against the accepted rows: row 2 still has no outcome
    meta = Job.from_item(store.jobs.get_job(JOB))
    assert meta.outcomes == 1 and meta.all_outcomes_in is False
    assert service.sweep() == []  # no early "final" write (nor one every run)
    hook.handle(push(2))
    assert Job.from_item(store.jobs.get_job(JOB)).all_outcomes_in is True and service.sweep() == [JOB]


def test_the_final_write_comes_after_the_wait_even_with_outcomes_missing(store, aws, clock):
    settled_job(store, accepted=2)
    finisher, _, service = services(store, aws, clock, final_wait_s=3600)
    finisher.settled(JOB)
    assert service.sweep() == []  # still waiting
    clock.t = T0 + 3600
    assert service.sweep() == [JOB]
    assert store.jobs.get_job(JOB)["report_final"] is True
    assert [r["outcome"] for r in report(aws[0])] == ["PENDING", "PENDING", ""]


def _receive_all(aws) -> list[dict]:
    _, sqs, url = aws
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])


def test_the_sweep_books_its_request_so_a_backlogged_report_function_is_not_asked_again_every_run(store, aws, clock):
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, queued=True, final_wait_s=3600)
    finisher.settled(JOB)  # the first write, at T0
    # the wait is over: the sweep asks for the final write; the next run sees it booked
    clock.t = T0 + 3600
    assert service.sweep() == [JOB]
    clock.t = T0 + 3900
    assert service.sweep() == []
    # the report function still has not got to it (a backlog): an hour of runs asks at most
    # once every other run, never every run
    asked = 0
    for run in range(2, 14):
        clock.t = T0 + 3600 + run * 300
        asked += len(service.sweep())
    assert 1 <= asked <= 6  # asked again while unserved (a lost request is not lost for good), not every run
    # and once it gets to them, the first request writes the final report, the rest nothing
    messages = _receive_all(aws)
    assert {json.loads(m["Body"])["kind"] for m in messages} == {"final"}
    answers = [service.handle(m["Body"]) for m in messages]
    assert answers == ["rewritten"] + ["already final"] * (len(messages) - 1)
    assert store.jobs.get_job(JOB)["report_final"] is True


def test_an_outcome_while_the_sweeps_write_waits_is_in_it_and_one_after_it_books_the_next(store, aws, clock):
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, queued=True, final_wait_s=3600)
    finisher.settled(JOB)
    hook = WebhookService(store, reports=requests)
    clock.t = T0 + 3600
    assert service.sweep() == [JOB]
    [request] = _receive_all(aws)
    # an outcome before the report function got to the request: the booked write will read it
    clock.t = T0 + 3700
    assert requests.outcome(JOB) is False
    hook.handle(push(1))
    assert service.handle(request["Body"]) == "rewritten"
    assert [r["outcome"] for r in report(aws[0])] == ["ANSWERED", "PENDING", ""]
    assert store.jobs.get_job(JOB)["report_final"] is True
    # an outcome after that write books the next one (the sweep's booking was given back)
    clock.t = T0 + 3710
    hook.handle(push(2))
    assert store.jobs.get_job(JOB)["report_next_at"] == int(T0) + 3700 + 60  # the debounce after that write
    assert queued(aws) == [{"visible": 0, "delayed": 1}]
    clock.t = T0 + 3760
    assert service.handle(json.dumps({"job": JOB, "kind": "outcome"})) == "rewritten"  # that request, delivered
    assert [r["outcome"] for r in report(aws[0])] == ["ANSWERED", "ANSWERED", ""]


def test_a_sweep_request_sqs_refused_gives_its_booking_back_and_the_next_run_asks_again(store, aws, clock):
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, queued=True, final_wait_s=3600)
    finisher.settled(JOB)
    real_send = requests.send

    def refused(*args, **kwargs):
        raise ConnectionError("SQS went away")

    requests.send = refused  # type: ignore[method-assign]
    clock.t = T0 + 3600
    assert service.sweep() == []
    assert store.jobs.get_job(JOB).get("report_next_at", 0) == 0
    requests.send = real_send  # type: ignore[method-assign]
    clock.t = T0 + 3900
    assert service.sweep() == [JOB]


# ------------------------------------------------------------------------------- a writer dying half-way
class FailsOnce:
    """An S3 client whose first report upload fails (S3 refused it, the writer crashed)."""

    def __init__(self, s3):
        self.s3, self.failed = s3, False

    def upload_fileobj(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise ConnectionError("S3 went away")
        return self.s3.upload_fileobj(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.s3, name)


def test_a_writer_killed_half_way_is_retried_by_the_next_trigger_once_its_lease_ends(store, aws, clock):
    settled_job(store)
    s3, sqs, url = aws
    _, requests, service = services(store, aws, clock, queued=True)
    # a writer killed half-way (a Lambda time-out runs none of our code): its lease stays taken
    assert store.jobs.claim_finalize(JOB) is True
    assert service.handle(json.dumps({"job": JOB, "kind": "settled"})) == "busy"
    assert queued(aws) == [{"visible": 0, "delayed": 1}]  # asked again (delayed), not dropped
    assert not store.jobs.get_job(JOB).get("completed")
    clock.t = T0 + 961  # the lease (960 s) has run out: the next trigger writes
    assert service.handle(json.dumps({"job": JOB, "kind": "settled"})) == "written"
    assert len(report(s3)) == 4 and store.jobs.get_job(JOB)["completed"] is True


def test_a_writer_that_crashes_half_way_gives_its_lease_back_and_the_next_trigger_writes(store, aws, clock):
    settled_job(store)
    s3, _, _ = aws
    finisher = JobFinisher(store, FailsOnce(s3), BUCKET, clock=clock)
    service = ReportService(store, finisher, ReportRequests(store, lambda: finisher), clock=clock)
    with pytest.raises(ConnectionError):  # the record fails: SQS delivers it again
        service.handle(json.dumps({"job": JOB, "kind": "settled"}))
    assert service.handle(json.dumps({"job": JOB, "kind": "settled"})) == "written"
    assert len(report(s3)) == 4


class OutcomesArriveDuringUpload:
    """An S3 client whose next report upload first lets the three outcomes arrive and a second
    writer try a final write: the race of two report functions writing one job."""

    def __init__(self, s3, during):
        self.s3, self.during, self.armed = s3, during, False

    def upload_fileobj(self, *args, **kwargs):
        if self.armed:
            self.armed = False
            self.during()
        return self.s3.upload_fileobj(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.s3, name)


@pytest.mark.parametrize(("pull_api_url", "after_s", "wait_s", "expected"), [
    ("", 7200, 3600, 3600),  # no reconciler: the configured wait
    ("https://pull.example/v2", 7200, 3600, 7800),  # it asks after 2 h: the final write waits for two runs
    ("https://pull.example/v2", 600, 3600, 3600),  # it asks long before the wait is over
])
def test_the_final_write_waits_until_the_reconciler_had_two_runs_at_the_last_calls(
        aws_env, monkeypatch, pull_api_url, after_s, wait_s, expected):
    from phonon_outbound import settings, wiring

    for name, value in {"PULL_API_URL": pull_api_url, "RECONCILE_AFTER_S": str(after_s),
                        "REPORT_FINAL_WAIT_S": str(wait_s), "STATE_TABLE": "state", "RESULTS_TABLE": "results",
                        "BUCKET_NAME": BUCKET}.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    try:
        assert settings.current().final_write_after_s == expected
        assert wiring.report_service().final_wait_s == expected  # the sweep's "overdue"
        assert wiring.finisher().final_wait_s == expected  # the write's own "final"
    finally:
        wiring.reset()


def test_two_writes_of_one_job_never_overlap_so_an_older_read_never_lands_after_a_final_one(store, aws, clock):
    settled_job(store)
    s3, sqs, url = aws
    inner: list[str] = []
    slow = OutcomesArriveDuringUpload(s3, lambda: None)
    finisher = JobFinisher(store, slow, BUCKET, clock=clock)
    requests = ReportRequests(store, lambda: finisher, sqs, url, 60, clock=clock)
    service = ReportService(store, finisher, requests, clock=clock)
    assert service.handle(json.dumps({"job": JOB, "kind": "settled"})) == "written"
    sqs.purge_queue(QueueUrl=url)
    hook = WebhookService(store, reports=requests)

    def second_writer():  # every outcome arrives, then another report function asks for the final write
        for row in (1, 2, 3):
            hook.handle(push(row))
        inner.append(service.handle(json.dumps({"job": JOB, "kind": "final"})))

    sent: list[tuple[str, str]] = []
    real_send = requests.send

    def recording_send(job: str, kind: str, delay_s: float = 0) -> None:
        sent.append((job, kind))
        real_send(job, kind, delay_s)

    requests.send = recording_send  # type: ignore[method-assign]
    slow.during, slow.armed = second_writer, True
    clock.t = T0 + 120
    assert service.write(JOB) == "rewritten"  # read the rows before the outcomes came
    assert inner == ["busy"]  # the second writer did not overlap the first one
    assert summary(s3)["outcomes"] == {"arrived": 0, "pending": 3, "final": False}  # the older read, for now
    assert (JOB, "final") in sent  # the busy request was asked again, not dropped
    assert service.handle(json.dumps({"job": JOB, "kind": "final"})) == "rewritten"  # the retry, now free
    assert summary(s3)["outcomes"] == {"arrived": 3, "pending": 0, "final": True}
    assert store.jobs.get_job(JOB)["report_final"] is True
    assert [r["outcome"] for r in report(s3)][:3] == ["ANSWERED"] * 3


def test_a_busy_write_is_asked_again_within_half_a_minute_not_when_the_lease_would_run_out(store, aws, clock):
    settled_job(store)
    _, requests, service = services(store, aws, clock, queued=True)
    assert service.handle(json.dumps({"job": JOB, "kind": "settled"})) == "written"
    sent: list[tuple] = []
    requests.send = lambda job, kind, delay_s=0: sent.append((job, kind, delay_s))  # type: ignore[method-assign]
    assert store.jobs.claim_finalize(JOB, rewrite=True) is True  # another writer at work
    assert service.handle(json.dumps({"job": JOB, "kind": "outcome"})) == "busy"
    assert sent == [(JOB, "outcome", 30)]


def test_a_report_request_for_an_unknown_or_unsettled_job_writes_nothing(store, aws, clock):
    _, _, service = services(store, aws, clock)
    assert service.write("nope") == "unknown"
    store.jobs.create_job(JOB, {"key": "in/a.csv", "ingest_done": False})
    assert service.write(JOB) == "not settled"


@pytest.mark.parametrize("body", [
    json.dumps({"job": "J" * 129, "kind": "settled"}),  # over DynamoDB's key limit: every receive would fail
    json.dumps({"job": {"a": 1}, "kind": "settled"}),  # not looked up as "{'a': 1}"
    json.dumps({"job": 7, "kind": "settled"}),
    json.dumps({"job": "", "kind": "settled"}),
    json.dumps({"job": JOB, "kind": "rewrite-everything"}),
    json.dumps({"job": JOB}),
    json.dumps([JOB]),
    "not json",
])
def test_a_request_the_schema_refuses_is_dropped_unread_and_its_value_not_logged(store, aws, clock, body,
                                                                                monkeypatch):
    from jsonschema import Draft202012Validator

    from phonon_outbound import reporting
    from tests.conftest import ROOT

    logged: list[str] = []
    monkeypatch.setattr(reporting.logger, "warning", lambda msg, *a, **kw: logged.append(json.dumps([msg, kw])))
    settled_job(store)
    _, _, service = services(store, aws, clock, queued=True)
    looked_up: list[str] = []
    real_get = store.jobs.get_job
    store.jobs.get_job = lambda job: looked_up.append(job) or real_get(job)  # type: ignore[method-assign]
    assert service.handle(body) == "dropped"
    assert looked_up == [] and not store.jobs.get_job(JOB).get("completed")
    assert len(logged) == 1 and "report request dropped" in logged[0]
    assert "JJJJ" not in logged[0] and "rewrite-everything" not in logged[0] and "\"a\"" not in logged[0]
    # the same line the schema draws (schemas/report-request.json)
    validator = Draft202012Validator(json.loads((ROOT / "schemas" / "report-request.json").read_text()))
    if body != "not json":
        assert not validator.is_valid(json.loads(body))


def test_a_request_of_the_longest_job_id_is_taken(store, aws, clock):
    _, _, service = services(store, aws, clock, queued=True)
    assert service.handle(json.dumps({"job": "J" * 128, "kind": "settled"})) == "unknown"


def test_a_push_for_a_conflicting_uuid_records_no_outcome(store, aws, clock):
    settled_job(store)
    _, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(1))
    other = copy.deepcopy(json.loads(push(1, uuid="uuid-other", hangupCause="USER_BUSY")))
    with pytest.raises(Exception, match="another phonon-uuid"):
        hook.handle(json.dumps(other))
    assert store.jobs.get_job(JOB)["outcomes"] == 1
    assert next(r for r in store.rows.iter_rows(JOB) if r["row"] == 1)["outcome"] == "ANSWERED"


# ------------------------------------------------------------------------------- the handler, on its samples
def _report_handler():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("report_handler", ROOT / "functions" / "report" / "report_handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_report_function_takes_its_sam_samples_and_writes_the_job_a_request_names(stack, monkeypatch):
    """events/sqs-report-request.json (a request on the report queue) and events/schedule-event.json
    (its 5-minute schedule), as `sam local invoke ReportFunction -e …` would give them."""
    from phonon_outbound import wiring
    from phonon_outbound.store import Store
    from phonon_outbound_dev.local.runner import FakeContext
    from tests.conftest import ROOT

    env = stack.function_environment()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    try:
        handler = _report_handler().handler
        sample = json.loads((ROOT / "events" / "sqs-report-request.json").read_text())
        # a request for a job nobody knows: answered, not failed (no redelivery towards the DLQ)
        assert handler(sample, FakeContext("report", 60)) == {"batchItemFailures": []}
        # the same request for a settled job writes its report
        job = json.loads(sample["Records"][0]["body"])["job"]
        s3 = boto3.client("s3", region_name="us-east-1")
        store = Store(env["STATE_TABLE"], env["RESULTS_TABLE"], boto3.resource("dynamodb", region_name="us-east-1"))
        store.jobs.create_job(job, {"key": "incoming/a.csv", "bucket": env["BUCKET_NAME"], "flow": "Flow0001",
                                    "total_rows": 1, "ingest_done": True, "chunks_total": 1,
                                    "report_csv_key": "reports/a.csv.results.csv",
                                    "report_summary_key": "reports/a.csv.summary.json", "status": "DISPATCHING"})
        store.ledger.claim_chunk(job, 0, 120)
        store.rows.put_outcomes(job, 0, [{"row": 1, "status": Status.ACCEPTED.value, "cid": "C1", "request_id": "r",
                                          "phonon_uuid": "", "reason": "", "numbers": []}], at=int(T0))
        store.ledger.settle_chunk(job, 0, "DONE")
        store.ledger.count_settled(job, 0, accepted=1)
        assert handler(sample, FakeContext("report", 60)) == {"batchItemFailures": []}
        body = s3.get_object(Bucket=env["BUCKET_NAME"], Key="reports/a.csv.results.csv")["Body"].read().decode()
        [row] = list(csv.DictReader(io.StringIO(body)))
        assert (row["row"], row["client-identifier"], row["status"], row["outcome"]) == ("1", "C1", "ACCEPTED", "PENDING")
        # the schedule: the sweep, which asks nothing for a job whose outcomes are still pending
        schedule = json.loads((ROOT / "events" / "schedule-event.json").read_text())
        assert handler(schedule, FakeContext("report", 60)) == {"requested": []}
    finally:
        wiring.reset()


def test_every_report_request_sent_is_one_the_schema_allows(store, aws, clock):
    from jsonschema import Draft202012Validator

    from tests.conftest import ROOT

    validator = Draft202012Validator(json.loads((ROOT / "schemas" / "report-request.json").read_text()))
    _, sqs, url = aws
    requests = ReportRequests(store, lambda: None, sqs, url)
    for kind in ("settled", "outcome", "final"):
        requests.send(JOB, kind)
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(b["kind"] for b in bodies) == ["final", "outcome", "settled"]
    for body in bodies:
        validator.validate(body)


def test_a_counter_that_ran_ahead_of_the_rows_does_not_make_the_sweeps_write_final(store, aws, clock):
    """The job's `outcomes` counter can run ahead of its rows (a push counted before its chunk
    settled, the row then FAILED): the sweep asks for a write, but only the rows decide whether
    it is final, so the row still without an outcome keeps the job awaiting (and reconciled)."""
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, queued=True, final_wait_s=3600)
    finisher.settled(JOB)  # the first write, at T0
    WebhookService(store, reports=requests).handle(push(1))
    store.jobs.add_to_job(JOB, outcomes=1)  # counted for a row that then settled otherwise
    clock.t = T0 + 600
    assert service.sweep() == [JOB]  # the counter says all in: a write is asked for
    [message] = [m for m in _receive_all(aws) if json.loads(m["Body"])["kind"] != "settled"]
    assert json.loads(message["Body"])["kind"] == "outcome"  # not "final": the wait is not over
    assert service.handle(message["Body"]) == "rewritten"
    assert summary(aws[0])["outcomes"] == {"arrived": 1, "pending": 1, "final": False}
    assert JOB in list(store.jobs.awaiting_outcomes())
