"""`DispatchService.handle` returns what becomes of a chunk message as a value — `Done`,
`RetryAfter`, `HandBack` or `Poison` — and makes no SQS call itself. The real service against
moto (built from template.yaml) and the bundled simulator over HTTP. Given/When/Then."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from phonon_outbound import wiring
from phonon_outbound.dispatch import OUT_OF_TIME_DELAY_S
from phonon_outbound.outcomes import Done, Fate, HandBack, Poison, RetryAfter, RowOutcome
from phonon_outbound.status import Status
from phonon_outbound.store.jobs import DynamoJobs
from phonon_outbound_dev.simulator import FaultPlan

from .conftest import csv_rows, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def one_chunk(h, name: str, rows: int) -> str:
    obj = h.upload(name, csv_rows(rows))
    h.ingest(obj)
    [message] = h.receive()
    h.sqs.delete_message(QueueUrl=h.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return message["Body"]


def queue_is_empty(h) -> bool:
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    return all(int(attrs[k]) == 0 for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                            "ApproximateNumberOfMessagesDelayed"))


def test_an_accepted_chunk_is_done_with_every_rows_typed_outcome_and_a_redelivery_is_a_duplicate(make_harness):
    h = make_harness(shape="200")
    body = one_chunk(h, "done.csv", 3)
    service = wiring.dispatch_service()
    decision = service.handle(body, 1, lambda: 60.0)
    assert isinstance(decision, Done) and decision.outcome.fate is Fate.SETTLED
    out = decision.outcome
    assert sorted(out.rows) == [1, 2, 3]
    assert all(isinstance(o, RowOutcome) and o.status is Status.ACCEPTED and o.phonon_uuid for o in out.rows.values())
    assert (out.count(Status.ACCEPTED), out.requests, out.attempts) == (3, 1, 1)
    assert out.rows[1].cid == "C-000000" and out.rows[1].numbers
    # a redelivery of the settled chunk: done, its outcome stands, nothing sent
    again = service.handle(body, 2, lambda: 60.0)
    assert isinstance(again, Done) and again.outcome.fate is Fate.DUPLICATE_DELIVERY
    assert h.sim.stats()["requests"] == 1
    assert queue_is_empty(h)  # the service queued nothing itself


def test_a_chunk_with_one_bad_record_is_bisected_and_each_row_gets_its_own_outcome(make_harness):
    # Given Phonon refuses any body holding row 3's number (205 Invalid Contact Number)
    h = make_harness(shape="200")
    h.sim.set_faults(FaultPlan(record_error_numbers=["919800000002"]))
    body = one_chunk(h, "bisect.csv", 4)
    decision = wiring.dispatch_service().handle(body, 1, lambda: 60.0)
    # Then the body is split until the bad call stands alone: [1-4] → [1,2] ok, [3,4] → [3] bad, [4] ok
    assert isinstance(decision, Done)
    out = decision.outcome
    assert {row: o.status for row, o in out.rows.items()} == {
        1: Status.ACCEPTED, 2: Status.ACCEPTED, 3: Status.FAILED, 4: Status.ACCEPTED}
    assert "205" in out.rows[3].reason
    assert out.attempts == 5 and out.requests == 5
    assert out.counters() == {"accepted": 3, "failed": 1, "duplicate": 0, "cancelled": 0}


def test_a_capped_chunk_with_one_bad_record_is_bisected_to_the_end_on_its_first_receive(make_harness):
    # Given a job capped at 30 calls a minute whose only chunk holds a number Phonon refuses
    from phonon_outbound.control import ControlService

    h = make_harness(shape="200")
    h.sim.set_faults(FaultPlan(record_error_numbers=["919800000002"]))
    body = one_chunk(h, "capped-bisect.csv", 4)
    job = json.loads(body)["job"]
    ControlService(wiring.store(), h.bucket, lambda j: None).apply("limit", {"job": job}, per_minute=30)
    # When it is handled once
    decision = wiring.dispatch_service().handle(body, 1, lambda: 60.0)
    # Then the halves are not charged to the cap again (the whole chunk paid for its calls):
    # every row has its own outcome on this receive, nothing waits for a retry
    assert isinstance(decision, Done), decision
    assert {row: o.status for row, o in decision.outcome.rows.items()} == {
        1: Status.ACCEPTED, 2: Status.ACCEPTED, 3: Status.FAILED, 4: Status.ACCEPTED}
    assert h.sim.stats()["requests"] == 5


def test_too_little_time_left_is_a_hand_back_and_nothing_is_queued_by_the_service(make_harness):
    h = make_harness()
    body = one_chunk(h, "handback.csv", 2)
    decision = wiring.dispatch_service().handle(body, 1, lambda: 1.0)
    assert decision == HandBack(OUT_OF_TIME_DELAY_S, decision.reason) and "s left in this invocation" in decision.reason
    assert h.sim.stats()["requests"] == 0
    assert queue_is_empty(h)


def test_a_chunk_another_dispatcher_holds_is_handed_back_until_its_lease_runs_out(make_harness):
    h = make_harness()
    body = one_chunk(h, "held.csv", 2)
    msg = json.loads(body)
    assert wiring.store().ledger.claim_chunk(msg["job"], msg["chunk"], 2).state == "claimed"
    decision = wiring.dispatch_service().handle(body, 1, lambda: 60.0)
    assert isinstance(decision, HandBack) and 1 < decision.seconds <= 3
    assert decision.reason == "another dispatcher holds this chunk"


def test_a_transient_answer_is_retry_after_and_on_the_last_receive_the_rows_fail_and_it_goes_to_the_dlq(make_harness):
    h = make_harness(max_receive_count=2)
    h.sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    obj = h.upload("transient.csv", csv_rows(2))
    h.ingest(obj)
    [message] = h.receive()
    body = message["Body"]
    service = wiring.dispatch_service()
    # a first receive: retried through the visibility timeout, nothing recorded
    first = service.handle(body, 1, lambda: 60.0)
    assert isinstance(first, RetryAfter) and first.seconds is not None and "500" in first.reason
    assert not h.job(obj).get("completed")
    # the last receive: the rows are FAILED and recorded, and the message still fails (to the DLQ)
    last = service.handle(body, 2, lambda: 60.0)
    assert isinstance(last, RetryAfter) and last.seconds == 0
    assert last.reason.startswith("retries exhausted after 2 attempts")
    assert statuses(h.report(obj)) == {"FAILED": 2}
    # a receive past the last one sends nothing more
    assert isinstance(service.handle(body, 3, lambda: 60.0), RetryAfter)
    assert h.sim.stats()["requests"] == 2


def test_an_unexpected_error_before_the_last_receive_is_retry_after_the_queues_own_timeout(make_harness, monkeypatch):
    h = make_harness()
    body = one_chunk(h, "throttled.csv", 2)

    def throttled(*_args, **_kwargs):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "GetItem")

    monkeypatch.setattr(DynamoJobs, "control", throttled)  # the first read of a chunk
    decision = wiring.dispatch_service().handle(body, 1, lambda: 60.0)
    assert decision == RetryAfter(None, "ThrottlingException: Rate exceeded")


def test_a_message_that_names_no_rows_is_poison_and_one_that_names_them_settles_them_failed(make_harness):
    h = make_harness()
    service = wiring.dispatch_service()
    assert service.handle("not json at all", 1, lambda: 60.0) == Poison("not a chunk message: 1 validation errors")
    body = json.loads(one_chunk(h, "unreadable.csv", 2))
    body["calls_gz"] = "%%%"
    decision = service.handle(json.dumps(body), 1, lambda: 60.0)
    assert isinstance(decision, Done) and decision.outcome.count(Status.FAILED) == 2
    assert all(o.reason.startswith("not sent: the chunk message could not be read") for o in decision.outcome.rows.values())
