"""Every way a chunk can fail ends with its rows' outcomes and the job's report: the real
dispatch handler against moto (built from template.yaml) and the bundled simulator over HTTP.
Given/When/Then."""

from __future__ import annotations

import base64
import gzip
import json
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from phonon_outbound import wiring
from phonon_outbound.api.body import MAX_BODY_BYTES
from phonon_outbound.outcomes import Done, Fate, HandBack
from phonon_outbound.status import Status
from phonon_outbound.store.dedupe import DynamoDedupe
from phonon_outbound.store.results import DynamoResults

from .conftest import Ctx, csv_rows, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def throttled(*_args, **_kwargs):
    raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                 "Message": "The level of configured provisioned throughput for the table was exceeded"}},
                      "BatchGetItem")


def visible_now(h, messages: list[dict]) -> None:
    for m in messages:
        h.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)


def delayed(h) -> int:
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesDelayed"])


def calls_of(body: str) -> list[dict]:
    return json.loads(gzip.decompress(base64.b64decode(json.loads(body)["calls_gz"])))


def with_calls(body: str, calls: object) -> str:
    msg = json.loads(body)
    msg["calls_gz"] = base64.b64encode(gzip.compress(json.dumps(calls).encode())).decode()
    return json.dumps(msg)


def dispatch_bodies(h, messages: list[dict], bodies: list[str], seconds: float = 60) -> dict:
    """The dispatch handler on these messages with other bodies (as if SQS had delivered them)."""
    import dispatch_handler

    event = h.sqs_event([{**m, "Body": b} for m, b in zip(messages, bodies, strict=True)])
    return dispatch_handler.handler(event, Ctx("dispatch", seconds))


# ---------------------------------------------------------------- issue 10 #11: time left
def test_given_less_time_left_than_a_request_may_take_then_the_chunk_is_handed_back_unsent(make_harness):
    import dispatch_handler

    # Given Phonon answers in 2 s and a request may take 3.05 + 5 s (connect + read timeout)
    h = make_harness()
    h.sim.latency_s = (2.0, 2.0)
    obj = h.upload("late.csv", csv_rows(3))
    h.ingest(obj)
    messages = h.receive()
    # When the dispatcher gets the chunk with 6 s left in its invocation
    result = dispatch_handler.handler(h.sqs_event(messages), Ctx("dispatch", 6))
    # Then nothing is sent, nothing failed, and a delayed copy waits for a fresh invocation
    assert result["batchItemFailures"] == []
    assert h.sim.stats()["requests"] == 0
    assert delayed(h) == 1
    chunk = wiring.store().state.get_item(Key={"pk": f"JOB#{obj.job_id}", "sk": "CHUNK#00000000"})["Item"]
    assert chunk["state"] == "WAITING"
    for m in messages:
        h.sqs.delete_message(QueueUrl=h.queue_url, ReceiptHandle=m["ReceiptHandle"])
    # and an invocation with time enough sends it, once
    h.drain(timeout=30)
    assert statuses(h.report(obj)) == {"ACCEPTED": 3} and h.sim.stats()["requests"] == 1


# ---------------------------------------------------------------- issue 10 #12: last receive
def test_given_throttling_on_the_last_receive_then_rows_are_failed_with_the_reason_and_the_report_is_written(
        make_harness, monkeypatch):
    h = make_harness(max_receive_count=2)
    obj = h.upload("throttled.csv", csv_rows(3))
    h.ingest(obj)
    monkeypatch.setattr(DynamoDedupe, "claim_dedupe", throttled)
    # When DynamoDB throttles the chunk on every receive
    messages = h.receive()
    assert h.dispatch(messages)["batchItemFailures"]  # the first receive: retried
    visible_now(h, messages)
    last = h.receive()
    assert last[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert h.dispatch(last)["batchItemFailures"]  # the last receive: on to the DLQ ...
    # Then ... with every row FAILED (client-identifier and reason), and the job's report written
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 3}
    assert [r["client-identifier"] for r in report] == ["C-000000", "C-000001", "C-000002"]
    assert "retries exhausted after 2 attempts" in report[0]["reason"]
    assert "ProvisionedThroughputExceededException" in report[0]["reason"]
    assert h.job(obj)["completed"] and h.sim.stats()["requests"] == 0
    visible_now(h, last)
    h.drain(timeout=10)
    assert h.dlq_depth() == 1


def test_given_an_error_after_phonon_accepted_on_the_last_receive_then_the_accepted_rows_stay_accepted(
        make_harness, monkeypatch):
    h = make_harness(shape="200", max_receive_count=1)
    obj = h.upload("accepted-then-error.csv", csv_rows(4))
    h.ingest(obj)
    monkeypatch.setattr(DynamoResults, "put_results", throttled)
    # When the results items cannot be written after Phonon accepted the chunk, on its only receive
    result = h.dispatch(h.receive())
    # Then the rows keep the answer's outcome, the report is written, and nothing is retried
    assert result["batchItemFailures"] == []
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 4} and all(r["phonon-uuid"] for r in report)
    assert h.sim.stats()["requests"] == 1


# ---------------------------------------------------------------- poison messages
def test_given_a_message_whose_calls_are_not_a_list_of_objects_then_its_rows_are_failed_and_reported(make_harness):
    h = make_harness()
    obj = h.upload("poison.csv", csv_rows(3))
    h.ingest(obj)
    messages = h.receive()
    good = calls_of(messages[0]["Body"])
    # When the calls decode to an object instead of a list
    result = dispatch_bodies(h, messages, [with_calls(messages[0]["Body"], {"calls": good})])
    # Then nothing is sent; every row is FAILED with the reason; the report is written
    assert result["batchItemFailures"] == []
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 3}
    assert "could not be read" in report[0]["reason"] and "list of call objects" in report[0]["reason"]
    assert h.sim.stats()["requests"] == 0


def test_given_a_message_with_one_call_that_is_not_an_object_then_rows_keep_their_client_identifiers(make_harness):
    h = make_harness()
    obj = h.upload("poison2.csv", csv_rows(3))
    h.ingest(obj)
    messages = h.receive()
    calls = calls_of(messages[0]["Body"])
    dispatch_bodies(h, messages, [with_calls(messages[0]["Body"], [calls[0], 7, calls[2]])])
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 3}
    assert [r["client-identifier"] for r in report] == ["C-000000", "", "C-000002"]


def test_given_an_unreadable_message_naming_no_known_job_then_it_goes_to_the_dlq_and_the_batch_goes_on(make_harness):
    h = make_harness(max_receive_count=2)
    obj = h.upload("neighbour.csv", csv_rows(2))
    h.ingest(obj)
    good = h.receive()[0]
    for body in ("not json at all", json.dumps({"job": "no-such-job", "chunk": 0, "rows": [1], "calls_gz": "%%"})):
        h.sqs.send_message(QueueUrl=h.queue_url, MessageBody=body)
    poison = h.receive()
    assert len(poison) == 2
    # When they arrive in one batch with a good chunk
    result = h.dispatch([good, *poison])
    # Then the good one is sent and reported, the two others fail alone
    assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == {m["MessageId"] for m in poison}
    assert statuses(h.report(obj)) == {"ACCEPTED": 2}
    assert list(wiring.store().rows.iter_outcomes("no-such-job")) == []
    assert wiring.store().jobs.get_job("no-such-job") is None  # no job item invented
    # and they reach the DLQ after the queue's receives, without waiting out visibility timeouts
    h.drain(timeout=15)
    assert h.dlq_depth() == 2


# ---------------------------------------------------------------- issue 10 #13: cancelled jobs
def test_given_a_job_cancelled_between_two_chunks_then_the_second_is_never_sent_and_its_rows_are_cancelled(
        make_harness):
    h = make_harness(batch_size=2)
    obj = h.upload("cancelled.csv", csv_rows(4))
    h.ingest(obj)
    messages = sorted(h.receive(), key=lambda m: json.loads(m["Body"])["chunk"])
    assert len(messages) == 2
    h.dispatch(messages[:1])
    # When the job is cancelled (its file was deleted) before the second chunk is sent
    wiring.store().state.update_item(
        Key={"pk": f"JOB#{obj.job_id}", "sk": "META"}, UpdateExpression="SET cancelled_reason = :r",
        ExpressionAttributeValues={":r": "cancelled: the input file was deleted"})
    result = h.dispatch(messages[1:])
    # Then it is not sent (one request in all), its rows are CANCELLED with the reason, the report is written
    assert result["batchItemFailures"] == []
    assert h.sim.stats()["requests"] == 1
    assert sorted(h.sim.stats()["calls_by_client_identifier"]) == ["C-000000", "C-000001"]
    report = h.report(obj)
    assert [r["status"] for r in report] == ["ACCEPTED", "ACCEPTED", "CANCELLED", "CANCELLED"]
    assert report[2]["reason"] == "cancelled: the input file was deleted"
    assert report[3]["client-identifier"] == "C-000003"
    # and a redelivery sends nothing either
    h.dispatch(messages[1:])
    assert h.sim.stats()["requests"] == 1


# ---------------------------------------------------------------- contract: 256 KB
def test_given_a_body_over_256_kb_then_it_is_not_sent_and_its_rows_fail_with_the_reason(make_harness):
    h = make_harness()
    obj = h.upload("big.csv", csv_rows(2))
    h.ingest(obj)
    messages = h.receive()
    calls = calls_of(messages[0]["Body"])
    calls[1]["keys"].append({"name": "$flow.key.Notes", "value": "x" * MAX_BODY_BYTES})
    result = dispatch_bodies(h, messages, [with_calls(messages[0]["Body"], calls)])
    assert result["batchItemFailures"] == []
    assert h.sim.stats()["requests"] == 0
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 2}
    assert "256 KB" in report[0]["reason"] and "not sent" in report[0]["reason"]


# ---------------------------------------------------------------- api_requests / api_attempts
def test_given_an_api_that_never_answers_then_no_request_is_counted_as_reaching_phonon(make_harness):
    h = make_harness(max_receive_count=2, api_url="http://127.0.0.1:9/kairos-apis/outbound/create")
    obj = h.upload("unreachable.csv", csv_rows(2))
    h.ingest(obj)
    h.drain(timeout=30)
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 2}
    assert [r["client-identifier"] for r in report] == ["C-000000", "C-000001"]
    job = h.job(obj)
    assert job["api_attempts"] == 2 and job.get("api_requests", 0) == 0
    assert h.summary(obj)["api_requests"] == 0


def test_requests_phonon_answered_are_counted_apart_from_attempts(make_harness):
    h = make_harness()
    obj = h.upload("counted.csv", csv_rows(2))
    h.ingest(obj)
    h.drain()
    job = h.job(obj)
    assert job["api_attempts"] == 1 and job["api_requests"] == 1


# ---------------------------------------------------------------- abandon()
def test_abandon_ends_a_chunks_rows_unsent_and_never_overrides_a_settled_chunk(make_harness):
    h = make_harness(batch_size=2)
    obj = h.upload("abandon.csv", csv_rows(4))
    h.ingest(obj)
    messages = sorted(h.receive(), key=lambda m: json.loads(m["Body"])["chunk"])
    h.dispatch(messages[:1])
    service = wiring.dispatch_service()
    # a settled chunk keeps its outcome
    assert service.abandon(messages[0]["Body"], Status.CANCELLED, "not sent: run interrupted") == 0
    # an unsent one ends with its rows' client-identifiers, the status and the reason
    assert service.abandon(messages[1]["Body"], Status.CANCELLED, "not sent: run interrupted") == 2
    report = h.report(obj)
    assert [(r["status"], r["client-identifier"]) for r in report] == [
        ("ACCEPTED", "C-000000"), ("ACCEPTED", "C-000001"), ("CANCELLED", "C-000002"), ("CANCELLED", "C-000003")]
    assert report[3]["reason"] == "not sent: run interrupted"
    assert h.job(obj)["completed"]
    # and its message, delivered after all, sends nothing
    h.dispatch(messages[1:])
    assert h.sim.stats()["requests"] == 1
    assert service.abandon("not a chunk message", Status.FAILED, "x") == 0


# ---------------------------------------------------------------- retention
def test_results_items_and_dedupe_claims_carry_expires_at(make_harness):
    h = make_harness(shape="200")
    obj = h.upload("expiry.csv", csv_rows(2))
    h.ingest(obj)
    h.drain()
    now = time.time()
    report = h.report(obj)
    item = wiring.store().results.get_result(report[0]["phonon-uuid"])
    assert now + 89 * 86400 < item["expires_at"] <= now + 91 * 86400
    claims = [i for i in boto3.resource("dynamodb", region_name="us-east-1").Table(h.env["STATE_TABLE"]).scan()["Items"]
              if str(i["pk"]).startswith("DEDUPE#")]
    assert len(claims) == 2 and all(now < int(c["expires_at"]) <= now + 25 * 3600 + 60 for c in claims)


def test_a_request_starts_only_with_its_connect_and_read_timeouts_plus_the_margin_left(make_harness):
    h = make_harness()
    obj = h.upload("boundary.csv", csv_rows(2))
    h.ingest(obj)
    body = h.receive()[0]["Body"]
    service = wiring.dispatch_service()
    need = service.request_time_s
    assert need == pytest.approx(3.05 + 5 + service.send_margin_s)  # harness: API_READ_TIMEOUT_S=5
    # just under: handed back unsent
    assert isinstance(service.handle(body, 1, lambda: need - 0.01), HandBack)
    assert h.sim.stats()["requests"] == 0
    # enough: sent
    done = service.handle(body, 1, lambda: need + 0.5)
    assert isinstance(done, Done) and done.outcome.fate is Fate.SETTLED
    assert h.sim.stats()["requests"] == 1
    assert statuses(h.report(obj)) == {"ACCEPTED": 2}
