"""Every way in (issue 11): an EventBridge event, an intake queue message, a Step Functions task
and an uploaded file, each driven through its real handler against moto and the simulator over
HTTP with the same 300 calls (docs/events-in.md)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import boto3
import pytest

from phonon_outbound import events_out, wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.records import Job
from phonon_outbound_dev.simulator import DEMO_FLOW_ID

from .conftest import Ctx, Harness, statuses
from .test_events_out_pipeline import Events, valid

ROOT = Path(__file__).resolve().parents[2]
CALLS = [{"client-identifier": f"R-{i:06d}", "contact-numbers": [f"98{i:08d}"]} for i in range(300)]
EVENT_ID = "6a7e8feb-b491-4cf7-a9f1-bf3703467718"


def eventbridge(detail: dict, event_id: str = EVENT_ID, source: str = "com.example.crm") -> dict:
    return {"version": "0", "id": event_id, "detail-type": "Outbound Calls Requested", "source": source,
            "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}


def sqs_event(h: Harness, *bodies: str, receive_count: int = 1) -> dict:
    arn = h.stack.physical["IntakeQueue"]["Arn"]
    return {"Records": [{"messageId": f"m-{i}-{time.monotonic_ns()}", "receiptHandle": f"r-{i}", "body": body,
                         "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0"},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": arn, "awsRegion": "us-east-1"} for i, body in enumerate(bodies)]}


def intake(event: dict) -> dict:
    import intake_handler

    return intake_handler.handler(event, Ctx("intake", 30))


def request_keys(h: Harness) -> list[str]:
    listed = h.s3.list_objects_v2(Bucket=h.bucket, Prefix="incoming/requests/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def run(h: Harness, key: str) -> ObjectRef:
    """What S3's Object Created event does on AWS: ingest the file, then dispatch until done."""
    head = h.s3.head_object(Bucket=h.bucket, Key=key)
    obj = ObjectRef(h.bucket, key, head.get("VersionId"), head.get("ETag"), head["ContentLength"])
    h.ingest(obj)
    h.drain()
    return obj


def assert_each_call_sent_once(h: Harness, obj: ObjectRef, n: int = 300, events: Events | None = None) -> None:
    """Each call reached Phonon once and the job has its report (and, with `events`, exactly one
    `Outbound Job Completed`, naming this job and its report)."""
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": n}
    assert [r["client-identifier"] for r in report] == [c["client-identifier"] for c in CALLS[:n]]
    by_cid = h.sim.stats()["calls_by_client_identifier"]
    assert len(by_cid) == n and set(by_cid.values()) == {1}
    assert Job.from_item(h.job(obj)).completed
    if events is not None:
        [entry] = events.put_of(events_out.JOB_COMPLETED)
        detail = valid(entry)
        assert detail["job-id"] == obj.job_id and detail["counts"]["ACCEPTED"] == n
        assert detail["report"]["results-key"] == h.report_keys(obj)[0]


@pytest.fixture
def rejections(monkeypatch) -> list[tuple]:
    """Every whole-request rejection the intake announces (the real events_out function runs too)."""
    from phonon_outbound import events_out

    seen: list[tuple] = []
    real = events_out.request_rejected

    def spy(*args, **kwargs):
        seen.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(events_out, "request_rejected", spy)
    return seen


def test_an_eventbridge_request_is_sent_once_reported_and_a_redelivery_does_nothing(make_harness):
    h = make_harness()
    events = Events()
    event = eventbridge({"flow-id": DEMO_FLOW_ID, "reference": "campaign-42", "calls": CALLS})
    assert intake(event)["status"] == "written"
    assert intake(event)["status"] == "already written"  # EventBridge delivers at least once
    assert request_keys(h) == [f"incoming/requests/eventbridge/{EVENT_ID}.json"]
    obj = run(h, request_keys(h)[0])
    assert_each_call_sent_once(h, obj, events=events)
    job = Job.from_item(h.job(obj))
    assert (job.origin, job.request_id, job.reference, job.task_token) == ("eventbridge", EVENT_ID, "campaign-42", "")
    requests = h.sim.stats()["requests"]
    assert intake(event)["status"] == "already written"  # a redelivery after the job ended
    assert request_keys(h) == [f"incoming/requests/eventbridge/{EVENT_ID}.json"]
    assert h.sim.stats()["requests"] == requests


def test_an_sqs_request_is_sent_once_and_a_duplicated_message_does_nothing(make_harness):
    h = make_harness()
    events = Events()
    body = json.dumps({"reference": "queue-7", "calls": CALLS})  # no flow-id: the default flow
    first = intake(sqs_event(h, body))
    second = intake(sqs_event(h, body))  # the same message delivered again (a new message id)
    assert first["batchItemFailures"] == [] and second["batchItemFailures"] == []
    [key] = request_keys(h)
    assert key.startswith("incoming/requests/sqs/") and key.endswith(".json")
    obj = run(h, key)
    assert_each_call_sent_once(h, obj, events=events)
    job = Job.from_item(h.job(obj))
    assert (job.origin, job.reference, job.flow) == ("sqs", "queue-7", DEMO_FLOW_ID)


def test_an_sns_notification_without_raw_delivery_is_unwrapped(make_harness):
    h = make_harness()
    body = json.dumps({"Type": "Notification", "MessageId": "n-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                       "Message": json.dumps({"reference": "sns-1", "calls": CALLS[:2]})})
    assert intake(sqs_event(h, body))["batchItemFailures"] == []
    [key] = request_keys(h)
    got = h.s3.get_object(Bucket=h.bucket, Key=key)
    assert json.loads(got["Body"].read()) == {"calls": CALLS[:2]}
    assert got["Metadata"]["phonon-reference"] == "sns-1"


def test_an_uploaded_file_with_the_same_calls_ends_the_same_and_its_origin_is_s3(make_harness):
    h = make_harness()
    events = Events()
    obj = h.upload("calls.json", json.dumps({"calls": CALLS}).encode())
    h.ingest(obj)
    h.drain()
    assert_each_call_sent_once(h, obj, events=events)
    assert Job.from_item(h.job(obj)).origin == "s3"


def test_a_file_that_merely_claims_to_be_a_request_is_an_upload(make_harness):
    h = make_harness()
    obj = h.upload("calls.json", json.dumps({"calls": CALLS[:3]}).encode(),
                   metadata={"phonon-origin": "stepfunctions", "phonon-task-token": "stolen"})
    h.ingest(obj)
    job = Job.from_item(h.job(obj))
    assert (job.origin, job.task_token) == ("s3", "")


def test_a_mixed_request_sends_the_good_calls_and_reports_the_others_rejected(make_harness):
    h = make_harness()
    calls = [*CALLS[:5], {"client-identifier": "BAD-1", "contact-numbers": ["12"]},
             {"client-identifier": "BAD-2"}, "not an object", *CALLS[5:8]]
    intake(eventbridge({"calls": calls}))
    obj = run(h, request_keys(h)[0])
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 8, "REJECTED": 3}
    rejected = [r for r in report if r["status"] == "REJECTED"]
    assert [r["client-identifier"] for r in rejected][:2] == ["BAD-1", "BAD-2"]
    assert all(r["reason"] for r in rejected)
    assert len(h.sim.stats()["calls_by_client_identifier"]) == 8


def test_a_single_call_request_is_one_row(make_harness):
    h = make_harness()
    intake(eventbridge({"flow-id": DEMO_FLOW_ID, "call": CALLS[0]}, event_id="one-call"))
    obj = run(h, "incoming/requests/eventbridge/one-call.json")
    assert_each_call_sent_once(h, obj, n=1)


@pytest.mark.parametrize(("detail", "reason"), [
    ({"calls": [{}] * 10_001}, "too many calls: 10,001 (at most 10,000 per request)"),
    ({"calls": []}, "no calls: 'calls' is empty"),
    ({"reference": "x"}, "no calls: give 'calls' (a list) or 'call' (one call)"),
    ("calls", "the request must be a JSON object"),
])
def test_a_request_refused_whole_writes_nothing_and_says_why(make_harness, rejections, detail, reason):
    h = make_harness()
    out = intake(eventbridge(detail, event_id="bad-1"))
    assert out["status"] == "rejected" and reason in out["reason"]
    assert request_keys(h) == []
    reference = detail.get("reference", "") if isinstance(detail, dict) else ""  # carried when usable
    assert rejections == [("eventbridge", "bad-1", reference, "", out["reason"])]


def test_a_malformed_message_fails_alone_and_is_announced_once(make_harness, rejections):
    h = make_harness()
    good = json.dumps({"calls": CALLS[:2]})
    event = sqs_event(h, "{not json", good, json.dumps({"calls": [{}] * 10_001}))
    out = intake(event)
    ids = [r["messageId"] for r in event["Records"]]
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == [ids[0], ids[2]]
    assert len(request_keys(h)) == 1
    assert [r[4] for r in rejections] == ["the message body is not valid JSON",
                                          "too many calls: 10,001 (at most 10,000 per request)"]
    again = intake(sqs_event(h, "{not json", receive_count=2))  # the next receive, before the DLQ
    assert len(again["batchItemFailures"]) == 1 and len(rejections) == 2


def test_a_malformed_message_reaches_the_intake_dlq_after_the_queues_receives(make_harness):
    """What the event source does with a failed record: back on the queue, to the DLQ after maxReceiveCount."""
    h = make_harness()
    url = h.stack.physical["IntakeQueue"]["Ref"]
    dlq = h.stack.physical["IntakeDeadLetterQueue"]["Ref"]
    h.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    h.sqs.send_message(QueueUrl=url, MessageBody='{"calls": []}')
    for _ in range(6):
        for m in h.sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", []):
            event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                                  "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": "",
                                  "eventSource": "aws:sqs", "eventSourceARN": "arn", "awsRegion": "us-east-1"}]}
            assert intake(event)["batchItemFailures"]
    moved = h.sqs.receive_message(QueueUrl=dlq).get("Messages", [])
    assert [m["Body"] for m in moved] == ['{"calls": []}']


# ------------------------------------------------------------------ Step Functions
def _state_machine(h: Harness, monkeypatch) -> tuple[object, str]:
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    asl = (ROOT / "examples/step-functions-place-calls.asl.json").read_text()
    asl = asl.replace("${IntakeQueueUrl}", h.stack.physical["IntakeQueue"]["Ref"])
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = sfn.create_state_machine(name="place-calls", definition=asl,
                                   roleArn="arn:aws:iam::123456789012:role/place-calls")["stateMachineArn"]
    return sfn, arn


def _deliver_intake_messages(h: Harness) -> dict:
    """The intake queue's event source: the message the state machine sent → the intake handler."""
    url = h.stack.physical["IntakeQueue"]["Ref"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        messages = h.sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", [])
        if messages:
            event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                                  "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": "",
                                  "eventSource": "aws:sqs", "eventSourceARN": "arn", "awsRegion": "us-east-1"}
                                 for m in messages]}
            return intake(event)
        time.sleep(0.1)
    raise AssertionError("the state machine sent nothing to the intake queue")


def _wait(sfn, execution: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        desc = sfn.describe_execution(executionArn=execution)
        if desc["status"] != "RUNNING":
            return desc
        time.sleep(0.1)
    return desc


def test_a_workflows_request_carries_its_task_token_to_the_job(make_harness, monkeypatch):
    h = make_harness()
    sfn, machine = _state_machine(h, monkeypatch)
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(
        {"flow-id": DEMO_FLOW_ID, "reference": "wf-1", "calls": CALLS}))["executionArn"]
    assert _deliver_intake_messages(h)["batchItemFailures"] == []
    [key] = request_keys(h)
    assert key.startswith("incoming/requests/stepfunctions/")
    obj = run(h, key)
    assert_each_call_sent_once(h, obj)
    job = Job.from_item(h.job(obj))
    assert (job.origin, job.reference) == ("stepfunctions", "wf-1")
    assert job.task_token and sfn.describe_execution(executionArn=execution)["status"] in ("RUNNING", "SUCCEEDED")


def test_a_workflow_hears_success_when_its_job_completes(make_harness, monkeypatch):
    h = make_harness()
    events = Events()
    sfn, machine = _state_machine(h, monkeypatch)
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(
        {"flow-id": DEMO_FLOW_ID, "reference": "wf-2", "calls": CALLS[:10]}))["executionArn"]
    _deliver_intake_messages(h)
    obj = run(h, request_keys(h)[0])
    assert_each_call_sent_once(h, obj, n=10, events=events)
    desc = _wait(sfn, execution)
    assert desc["status"] == "SUCCEEDED"
    output = json.loads(desc["output"])["outbound"]  # the example keeps the answer at $.outbound
    assert output["status"] == "COMPLETED" and output["counts"]["ACCEPTED"] == 10
    assert output["source"]["origin"] == "stepfunctions" and output["source"]["reference"] == "wf-2"


def test_a_workflows_request_refused_whole_fails_its_task_with_the_reason(make_harness, monkeypatch, rejections):
    h = make_harness()
    sfn, machine = _state_machine(h, monkeypatch)
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(
        {"flow-id": DEMO_FLOW_ID, "reference": "wf-3", "calls": [{}] * 10_001}))["executionArn"]
    out = _deliver_intake_messages(h)
    assert len(out["batchItemFailures"]) == 1  # to the intake DLQ after the queue's receives
    assert request_keys(h) == []
    desc = _wait(sfn, execution)
    assert desc["status"] == "FAILED"
    assert desc.get("error") == "Outbound.RequestRejected"
    # moto's Step Functions keeps the error of SendTaskFailure but drops its cause: the cause
    # sent is checked on the way out
    assert [r[4] for r in rejections] == ["too many calls: 10,001 (at most 10,000 per request)"]
    assert rejections[0][0] == "stepfunctions" and rejections[0][3]


def test_no_log_line_holds_a_task_token_or_a_number(make_harness, caplog):
    h = make_harness()
    caplog.set_level(logging.INFO, logger="phonon-outbound")
    token = "TOKEN-" + "x" * 200
    body = json.dumps({"reference": "r", "task-token": token, "calls": CALLS[:3]})
    intake(sqs_event(h, body))
    run(h, request_keys(h)[0])
    intake(sqs_event(h, json.dumps({"task-token": token, "calls": [{}] * 10_001})))
    text = "\n".join(str(r.__dict__) for r in caplog.records)
    assert token not in text and "9800000001" not in text
    assert "request written" in text and "request rejected" in text
    wiring.reset()


def test_the_sample_events_work_with_the_intake_handler(make_harness):
    h = make_harness()
    for name in ("eventbridge-calls-requested.json", "eventbridge-call-requested-one.json"):
        assert intake(json.loads((ROOT / "events" / name).read_text()))["status"] == "written"
    assert intake(json.loads((ROOT / "events" / "sqs-intake-message.json").read_text()))["batchItemFailures"] == []
    assert [k.split("/")[2] for k in request_keys(h)] == ["eventbridge", "eventbridge", "sqs"]
