"""Issue 12 probes (QA): outcomes in the report built from pushes in odd but valid shapes, the
summary's outcome counts against the report's rows, late pushes after the final write. On the
in-memory store and moto's S3/SQS, through the real WebhookService, JobFinisher and
ReportService (the helpers of test_reporting.py)."""

from __future__ import annotations

import json

import pytest

from phonon_outbound.webhook import WebhookService, parse_push, row_outcome

from .test_reporting import JOB, aws, clock, push, services, settled_job, store, summary  # noqa: F401
from .test_services_on_fakes import T0, report

CONNECTED = {"connectTime": "2026-11-30T10:00:05+05:30", "endTime": "2026-11-30T10:00:48+05:30",
             "hangupCause": "NORMAL_CLEARING"}


def outcome(doc: dict) -> dict:
    body = json.dumps(doc)
    return row_outcome(parse_push(body), body, "webhook", 5)


def ref(row: int) -> list[dict]:
    return [{"name": "$flow.key.OutboundRef", "value": f"{JOB}.{row}"}]


# ------------------------------------------------------------------ the push -> the outcome
def test_several_attempts_whose_last_is_unanswered_speak_through_the_answered_one():
    out = outcome({"phonon-uuid": "u1", "callDetails": [
        {**CONNECTED, "dtmfPressesd": ["4", "2"]},
        {"startTime": "2026-11-30T10:05:00+05:30", "endTime": "2026-11-30T10:05:30+05:30",
         "hangupCause": "NO_ANSWER", "dtmfPressesd": ["9"]},
        {"hangupCause": "USER_BUSY"}]})
    assert out["outcome"] == "ANSWERED" and out["attempts"] == 3 and out["duration"] == 43
    assert out["hangup_cause"] == "NORMAL_CLEARING" and out["dtmf"] == "42"
    assert out["ended_at"] == "2026-11-30T10:00:48+05:30"


def test_several_unanswered_attempts_speak_through_the_last_one():
    out = outcome({"phonon-uuid": "u1", "callDetails": [
        {"hangupCause": "USER_BUSY"}, {"hangupCause": "NO_ANSWER", "endTime": "2026-11-30T10:05:30+05:30"}]})
    assert (out["outcome"], out["attempts"], out["hangup_cause"], out["ended_at"]) == \
        ("NO_ANSWER", 2, "NO_ANSWER", "2026-11-30T10:05:30+05:30")


@pytest.mark.parametrize("name", ["dtmfPressesd", "dtmfPressed", "dtmf_pressed", "DTMF-Pressed", "DTMF", "dtmf"])
@pytest.mark.parametrize("value", [["1", "#"], "1#", [1, "#"]])
def test_dtmf_spelled_and_shaped_differently_is_read(name, value):
    assert outcome({"phonon-uuid": "u1", "callDetails": [{**CONNECTED, name: value}]})["dtmf"] == "1#"


@pytest.mark.parametrize("wrap", ["object", "text"])
def test_dtmf_inside_a_body_wrapper_is_read(wrap):
    inner = {"phonon-uuid": "u1", "callDetails": [{**CONNECTED, "dtmfPressesd": ["7"]}]}
    assert outcome({"body": inner if wrap == "object" else json.dumps(inner)})["dtmf"] == "7"


def test_an_answered_attempt_without_duration_or_end_has_no_duration_and_an_unanswered_one_zero():
    out = outcome({"phonon-uuid": "u1", "callDetails": [{"connectTime": "2026-11-30T10:00:05+05:30"}]})
    assert out["outcome"] == "ANSWERED" and "duration" not in out
    assert outcome({"phonon-uuid": "u1", "callDetails": [{"hangupCause": "NO_ANSWER"}]})["duration"] == 0


@pytest.mark.parametrize(("cause", "expected"), [(17, "BUSY"), ("17", "BUSY"), (19, "NO_ANSWER"),
                                                  ("no_answer", "NO_ANSWER"), ("UNALLOCATED_NUMBER", "FAILED")])
def test_hangup_causes_as_numbers_or_in_lower_case_map_to_the_vocabulary(cause, expected):
    assert outcome({"phonon-uuid": "u1", "callDetails": [{"hangupCause": cause}]})["outcome"] == expected


@pytest.mark.parametrize(("details", "expected", "delivery"), [
    ({"smsDetails": [{"deliveryStatus": "DELIVRD"}]}, "DELIVERED", "DELIVRD"),
    ({"emailDetails": [{"status": "opened"}]}, "DELIVERED", "opened"),
    ({"smsDetails": [{"deliveryStatus": "UNDELIV"}]}, "NOT_DELIVERED", "UNDELIV"),
    ({"smsDetails": [{"deliveryStatus": "EXPIRED"}]}, "NOT_DELIVERED", "EXPIRED"),
    # the channel's LAST status counts
    ({"smsDetails": [{"deliveryStatus": "DELIVERED"}, {"deliveryStatus": "FAILED"}]}, "NOT_DELIVERED", "FAILED"),
    ({"smsDetails": [{"deliveryStatus": "FAILED"}], "emailDetails": [{"status": "delivered"}]}, "DELIVERED",
     "sms: FAILED; email: delivered"),
])
def test_sms_and_email_only_pushes(details, expected, delivery):
    out = outcome({"phonon-uuid": "u1", **details})
    assert (out["outcome"], out["delivery"]) == (expected, delivery) and "attempts" not in out


@pytest.mark.parametrize("status", ["NOT-DELIVERED", "Message not delivered", "SENT_FAILED"])
def test_a_negated_delivery_status_is_not_delivered(status):
    assert outcome({"phonon-uuid": "u1", "smsDetails": [{"deliveryStatus": status}]})["outcome"] == "NOT_DELIVERED"


# ------------------------------------------------------------------ the report and its summary
def agreement(rows: list[dict], summ: dict) -> None:
    """The summary's counts agree with the rows: per status, and outcomes arrived/pending."""
    for status in ("ACCEPTED", "FAILED", "REJECTED", "DUPLICATE", "CANCELLED", "SUPPRESSED"):
        assert summ[status.lower()] == sum(r["status"] == status for r in rows), status
    accepted = [r for r in rows if r["status"] == "ACCEPTED"]
    assert summ["outcomes"]["pending"] == sum(r["outcome"] == "PENDING" for r in accepted)
    assert summ["outcomes"]["arrived"] == sum(r["outcome"] not in ("", "PENDING") for r in accepted)


def test_the_report_has_the_outcome_columns_in_order_and_the_summary_agrees_after_odd_pushes(store, aws, clock):  # noqa: F811 (the fixtures)
    settled_job(store, accepted=4)
    finisher, requests, service = services(store, aws, clock)
    finisher.settled(JOB)
    hook = WebhookService(store, reports=requests)
    sms = json.dumps({"phonon-uuid": "uuid-s", "keys": ref(2), "smsDetails": [{"deliveryStatus": "DELIVRD"}]})
    clock.t = T0 + 61
    for body in (push(1), push(1), sms, sms):  # each push twice
        assert hook.handle(body)["matched"] is True
    clock.t = T0 + 200
    hook.handle(json.dumps({"phonon-uuid": "uuid-3", "keys": ref(3), "callDetails": [
        {**CONNECTED, "dtmfPressesd": ["1"]}, {"hangupCause": "NO_ANSWER"}]}))
    rows = report(aws[0])
    assert list(rows[0]) == ["row", "client-identifier", "status", "phonon-uuid", "request-id", "reason",
                             "outcome", "answered", "duration_s", "attempts", "hangup_cause", "dtmf", "ended_at",
                             "delivery"]
    assert [(r["row"], r["status"], r["outcome"], r["answered"]) for r in rows] == [
        ("1", "ACCEPTED", "ANSWERED", "yes"), ("2", "ACCEPTED", "DELIVERED", ""), ("3", "ACCEPTED", "ANSWERED", "yes"),
        ("4", "ACCEPTED", "PENDING", ""), ("5", "FAILED", "", "")]
    assert (rows[1]["delivery"], rows[1]["phonon-uuid"], rows[2]["attempts"], rows[2]["dtmf"]) == \
        ("DELIVRD", "uuid-s", "2", "1")
    assert store.jobs.get_job(JOB)["outcomes"] == 3
    agreement(rows, summary(aws[0]))
    assert summary(aws[0])["outcomes"]["final"] is False


def test_a_push_for_a_failed_row_leaves_its_outcome_columns_empty(store, aws, clock):  # noqa: F811 (the fixtures)
    settled_job(store, accepted=2)  # row 3 FAILED
    finisher, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(3))  # Phonon ran the FAILED row's call anyway; before the first write
    finisher.settled(JOB)
    rows = report(aws[0])
    assert rows[2]["status"] == "FAILED"
    assert all(rows[2][c] == "" for c in ("outcome", "answered", "duration_s", "attempts", "hangup_cause",
                                          "dtmf", "ended_at", "delivery"))
    assert rows[2]["reason"].endswith("Phonon placed this call anyway: its flow-end webhook says ANSWERED")


def test_a_push_after_the_final_write_still_rewrites_the_report(store, aws, clock):  # noqa: F811 (the fixtures)
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, final_wait_s=3600)
    finisher.settled(JOB)
    clock.t = T0 + 3600
    assert service.sweep() == [JOB]  # final by the wait, rows 1-2 PENDING
    assert store.jobs.get_job(JOB)["report_final"] is True
    clock.t = T0 + 4000
    hook = WebhookService(store, reports=requests)
    assert hook.handle(push(2))["matched"] is True
    rows = report(aws[0])
    assert [r["outcome"] for r in rows] == ["PENDING", "ANSWERED", ""]
    agreement(rows, summary(aws[0]))
    assert summary(aws[0])["outcomes"]["final"] is True


def test_the_final_write_is_the_one_that_sees_every_accepted_call_with_its_outcome_queued(store, aws, clock):  # noqa: F811 (the fixtures)
    settled_job(store, accepted=2)
    finisher, requests, service = services(store, aws, clock, queued=True)
    finisher.settled(JOB)
    hook = WebhookService(store, reports=requests)
    clock.t = T0 + 10
    hook.handle(push(1))
    clock.t = T0 + 20
    hook.handle(push(2))
    _, sqs, url = aws
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessagesDelayed"]) + int(attrs["ApproximateNumberOfMessages"]) == 1
    clock.t = T0 + 61  # the booked write is delivered (moto would hold it 50 s of real time)
    bodies = [json.dumps({"job": JOB, "kind": "outcome"})]
    assert service.handle(bodies[0]) == "rewritten"
    assert store.jobs.get_job(JOB)["report_final"] is True and list(store.jobs.awaiting_outcomes()) == []
    assert summary(aws[0])["outcomes"] == {"arrived": 2, "pending": 0, "final": True}



# ------------------------------------------------------------------ status while outcomes are missing
def test_status_says_waiting_for_outcomes_while_an_accepted_row_is_pending_though_the_counter_ran_ahead(
        store, aws, clock):  # noqa: F811
    from phonon_outbound.status import Status
    from phonon_outbound_dev import job_status as st

    from .test_services_on_fakes import BUCKET, CSV_KEY, SUMMARY_KEY

    store.jobs.create_job(JOB, {"key": "in/a.csv", "bucket": BUCKET, "flow": "Flow0001", "total_rows": 3,
                                "ingest_done": True, "chunks_total": 1, "report_csv_key": CSV_KEY,
                                "report_summary_key": SUMMARY_KEY, "status": "DISPATCHING"})
    finisher, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    hook.handle(push(3))  # Phonon ran row 3 and pushed before our answer was recorded
    rows = [{"row": r, "status": Status.ACCEPTED.value, "cid": f"C{r}", "request_id": "req", "phonon_uuid": "",
             "reason": "", "numbers": []} for r in (1, 2)]
    rows.append({"row": 3, "status": Status.FAILED.value, "cid": "C3", "request_id": "req", "reason": "timeout",
                 "numbers": []})
    store.ledger.claim_chunk(JOB, 0, 120)
    store.rows.put_outcomes(JOB, 0, rows, at=int(T0))
    store.ledger.settle_chunk(JOB, 0, "DONE")
    store.ledger.count_settled(JOB, 0, accepted=2, failed=1)
    finisher.settled(JOB)
    hook.handle(push(1))
    finisher.finalize(JOB, force=True)
    assert [r["outcome"] for r in report(aws[0])][:2] == ["ANSWERED", "PENDING"]
    assert summary(aws[0])["outcomes"]["final"] is False
    pic = st.picture(store, JOB, limit=30_000, now=T0 + 100)
    assert pic.mix["groups"]["waiting"] == 1
    assert pic.state == "waiting for outcomes"


def test_outcome_cells_a_spreadsheet_would_run_get_an_apostrophe(store, aws, clock):  # noqa: F811
    settled_job(store, accepted=1)
    finisher, requests, _ = services(store, aws, clock)
    hook = WebhookService(store, reports=requests)
    hook.handle(json.dumps({"phonon-uuid": "uuid-1", "keys": ref(1), "callDetails": [
        {"hangupCause": "=HYPERLINK(\"x\")", "endTime": "+1+2"}], "smsDetails": [{"deliveryStatus": "@SUM(1)"}]}))
    finisher.settled(JOB)
    row = report(aws[0])[0]
    assert (row["hangup_cause"], row["ended_at"], row["delivery"]) == ("'=HYPERLINK(\"x\")", "'+1+2", "'@SUM(1)")
    assert row["outcome"] == "FAILED"
