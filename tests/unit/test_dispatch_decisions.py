"""The dispatch handler's one place that turns a `Decision` into SQS calls
(`phonon_outbound.sqs_actions`), against moto's SQS: which calls each decision makes, what
becomes of the message, and which records the batch reports failed. The records go through
powertools' `process_partial_response` with the handler's own `ConcurrentBatchProcessor`.
Given/When/Then."""

from __future__ import annotations

import json

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws

from phonon_outbound.outcomes import ChunkOutcome, Decision, Done, Fate, HandBack, Poison, RetryAfter
from phonon_outbound.sqs_actions import ConcurrentBatchProcessor, SqsActions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def sqs(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName="chunks", Attributes={"VisibilityTimeout": "360"})["QueueUrl"]
        calls: list[tuple[str, dict]] = []
        client.meta.events.register("provide-client-params.sqs.*",
                                    lambda params, model, **_: calls.append((model.name, dict(params))))
        yield client, url, calls


def receive(client, url: str, n: int) -> list[dict]:
    for i in range(n):
        client.send_message(QueueUrl=url, MessageBody=json.dumps({"chunk": i}))
    got: list[dict] = []
    while len(got) < n:
        got += client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    return got


def run_batch(client, url: str, calls: list, messages: list[dict], decisions: dict[str, Decision]) -> dict:
    """The handler's path: each record's decision (by message id) carried out by SqsActions."""
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": m["Attributes"], "messageAttributes": {}, "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:chunks", "awsRegion": "us-east-1"}
                         for m in messages]}
    actions = SqsActions(client, url)

    def record_handler(record: SQSRecord) -> str:
        return actions.apply(decisions[record.message_id], record)

    calls.clear()
    return process_partial_response(event=event, processor=ConcurrentBatchProcessor(4), record_handler=record_handler)


def counts(client, url: str) -> dict[str, int]:
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {k: int(attrs[f"ApproximateNumberOf{k}"]) for k in ("Messages", "MessagesNotVisible", "MessagesDelayed")}


def test_done_makes_no_sqs_call_and_the_record_succeeds(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    result = run_batch(client, url, calls, [m], {m["MessageId"]: Done(ChunkOutcome(Fate.SETTLED))})
    assert result["batchItemFailures"] == []
    assert calls == []


def test_hand_back_leaves_a_delayed_copy_and_the_record_succeeds(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    # Given a decision to wait 12.2 s without spending a receive
    result = run_batch(client, url, calls, [m], {m["MessageId"]: HandBack(12.2, "waiting for the rate limit")})
    # Then one copy of the same body is queued with DelaySeconds 13, and the record succeeds
    # (the event source deletes it)
    assert result["batchItemFailures"] == []
    assert calls == [("SendMessage", {"QueueUrl": url, "MessageBody": m["Body"], "DelaySeconds": 13})]
    assert counts(client, url)["MessagesDelayed"] == 1


def test_a_hand_back_longer_than_sqs_allows_is_delayed_900_s(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    run_batch(client, url, calls, [m], {m["MessageId"]: HandBack(3600, "flow paused")})
    assert calls[0][1]["DelaySeconds"] == 900


def test_retry_after_changes_the_visibility_and_the_record_is_a_batch_failure(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    result = run_batch(client, url, calls, [m], {m["MessageId"]: RetryAfter(29.5, "HTTP 503")})
    assert result["batchItemFailures"] == [{"itemIdentifier": m["MessageId"]}]
    assert calls == [("ChangeMessageVisibility", {"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"],
                                                  "VisibilityTimeout": 30})]
    assert client.receive_message(QueueUrl=url).get("Messages") is None  # not visible meanwhile
    assert counts(client, url)["MessagesDelayed"] == 0  # no copy


def test_retry_after_none_keeps_the_queues_own_visibility_timeout(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    result = run_batch(client, url, calls, [m], {m["MessageId"]: RetryAfter(None, "ClientError: throttled")})
    assert result["batchItemFailures"] == [{"itemIdentifier": m["MessageId"]}]
    assert calls == []


def test_poison_is_visible_again_at_once_and_the_record_is_a_batch_failure(sqs):
    client, url, calls = sqs
    [m] = receive(client, url, 1)
    result = run_batch(client, url, calls, [m], {m["MessageId"]: Poison("not a chunk message")})
    assert result["batchItemFailures"] == [{"itemIdentifier": m["MessageId"]}]
    assert calls == [("ChangeMessageVisibility", {"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"],
                                                  "VisibilityTimeout": 0})]
    again = client.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert [a["MessageId"] for a in again] == [m["MessageId"]]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_in_one_concurrent_batch_only_retried_and_poisoned_records_fail(sqs):
    client, url, calls = sqs
    done, hand_back, retry, poison = receive(client, url, 4)
    result = run_batch(client, url, calls, [done, hand_back, retry, poison], {
        done["MessageId"]: Done(ChunkOutcome(Fate.DUPLICATE_DELIVERY)),
        hand_back["MessageId"]: HandBack(5, "another dispatcher holds this chunk"),
        retry["MessageId"]: RetryAfter(0, "retries exhausted after 5 attempts: HTTP 500"),
        poison["MessageId"]: Poison("calls_gz cannot be decoded")})
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        [retry["MessageId"], poison["MessageId"]])
    assert sorted(name for name, _ in calls) == ["ChangeMessageVisibility", "ChangeMessageVisibility", "SendMessage"]


def test_the_fate_of_a_settled_chunk_is_the_records_result():
    record = SQSRecord({"messageId": "m", "body": "{}", "attributes": {"ApproximateReceiveCount": "1"}})
    assert SqsActions(None, "").apply(Done(ChunkOutcome(Fate.SETTLED)), record) == "settled"
