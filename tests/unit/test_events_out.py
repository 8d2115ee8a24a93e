"""events_out.py: the events' details (fields, bounds, counts with their zeros, no phone number),
publishing that never raises, and the task-token answers against moto's Step Functions.

moto runs a state machine for real when `execute_state_machine` is on: a `.waitForTaskToken`
task that sends the token to an SQS queue gives a real token, and our answer decides how the
execution ends (SUCCEEDED with our output, FAILED with our error), so these tests check what
a workflow sees, not which calls were made."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import boto3
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from phonon_outbound import events_out as eo
from phonon_outbound.dtmf import keys_pressed
from phonon_outbound.records import Job, JobStatus
from phonon_outbound.status import Status
from phonon_outbound.webhook import outcome_of, parse_push, row_outcome

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TOKEN_LIKE = "AQCEAAAAKgAAAAMAAAAAAAAAAe-secret-token-value"


def validator(name: str) -> Draft202012Validator:
    docs = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs.values())
    return Draft202012Validator(docs[name], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.dumps({k: str(v) for k, v in record.__dict__.items()}))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def our_log():
    """Every record our logger writes, message and extra keys, as logged (before any formatter)."""
    from phonon_outbound.observability import logger

    std = logging.getLogger(logger.name)
    handler, level = _Records(), std.level
    std.addHandler(handler)
    std.setLevel(logging.DEBUG)
    yield handler
    std.removeHandler(handler)
    std.setLevel(level)


def envelope(detail_type: str, detail: dict) -> dict:
    return {"source": eo.SOURCE, "detail-type": detail_type, "detail": detail}


def job_item(**extra) -> dict:
    return {"pk": "JOB#J1", "bucket": "b", "key": "incoming/requests/sqs/r1.json", "version": "v1", "flow": "DemoFlw1",
            "created_at": 1764151200, **extra}


def completed(item: dict, status: JobStatus = JobStatus.COMPLETED, counts: dict | None = None) -> dict:
    return eo.job_completed(Job.from_item(item), job="J1", status=status,
                            counts=counts if counts is not None else {Status.ACCEPTED: 3, Status.REJECTED: 1},
                            rows=4, bucket="b", csv_key="reports/x.results.csv", summary_key="reports/x.summary.json",
                            completed_at=1764151262.25)


# ------------------------------------------------------------------ building
def test_the_job_event_carries_every_status_with_zeros_its_source_and_report():
    item = job_item(origin="sqs", request_id="r1", reference="order-77", task_token=TOKEN_LIKE)
    detail = completed(item)
    assert detail["counts"] == {s.value: 0 for s in Status} | {"ACCEPTED": 3, "REJECTED": 1}
    assert list(detail["counts"]) == [s.value for s in Status]
    assert detail["source"] == {"origin": "sqs", "bucket": "b", "key": "incoming/requests/sqs/r1.json",
                                "version": "v1", "request-id": "r1", "reference": "order-77"}
    assert detail["report"] == {"bucket": "b", "results-key": "reports/x.results.csv",
                                "summary-key": "reports/x.summary.json"}
    assert (detail["job-id"], detail["status"], detail["rows"], detail["flow-id"]) == ("J1", "COMPLETED", 4, "DemoFlw1")
    assert (detail["started-at"], detail["completed-at"]) == ("2025-11-26T10:00:00.000Z", "2025-11-26T10:01:02.250Z")
    assert "reason" not in detail and TOKEN_LIKE not in json.dumps(detail)
    validator("outbound-job-completed.json").validate(envelope(eo.JOB_COMPLETED, detail))


def test_a_file_upload_is_origin_s3_and_a_rejection_carries_its_reason_bounded():
    item = job_item(error="no phone column " + "x" * 5000)
    detail = completed(item, JobStatus.REJECTED, counts={})
    assert detail["source"] == {"origin": "s3", "bucket": "b", "key": "incoming/requests/sqs/r1.json", "version": "v1"}
    assert detail["status"] == "REJECTED" and set(detail["counts"].values()) == {0}
    assert detail["reason"].startswith("no phone column") and len(detail["reason"]) == eo.MAX_REASON_CHARS
    validator("outbound-job-completed.json").validate(envelope(eo.JOB_COMPLETED, detail))


def test_an_unknown_origin_is_not_copied_into_the_event():
    assert completed(job_item(origin="ftp"))["source"]["origin"] == "s3"


def test_a_request_refused_before_it_was_a_job_has_no_job_id_no_report_and_zero_counts():
    detail = eo.request_rejected_detail("eventbridge", "ev-1", "flight-9", "no calls in the request")
    assert "job-id" not in detail and "report" not in detail
    assert detail["counts"] == {s.value: 0 for s in Status} and detail["rows"] == 0
    assert detail["source"] == {"origin": "eventbridge", "request-id": "ev-1", "reference": "flight-9"}
    validator("outbound-job-completed.json").validate(envelope(eo.JOB_COMPLETED, detail))


PUSH = {"phonon-uuid": "501c78ee-8d06-498e-8952-fce3495f326b",
        "callDetails": [{"calleeNumber": "919812345670", "startTime": "2026-11-26 15:29:00", "duration": "0",
                         "hangupCause": "NO_ANSWER", "dtmfPressesd": ["5"]},
                        {"calleeNumber": "918812345672", "startTime": "2026-11-26 15:30:01",
                         "connectTime": "2026-11-26 15:30:09", "endTime": "2026-11-26 15:31:02", "duration": "53",
                         "hangupCause": "NORMAL_CLEARING", "dtmfPressesd": ["1", "#", 9]}],
        "smsDetails": [{"deliveryStatus": "DELIVERED"}]}


def call_attrs(push: dict) -> dict:
    return {**outcome_of(parse_push(json.dumps(push))), "job": "J1", "row": 7, "flow-id": "DemoFlw1",
            "client-identifier": "C-7", "numbers": ["919812345670", "918812345672"]}


class Capture:
    """An EventBridge client stand-in that records PutEvents (only for shapes; moto is used where
    what AWS does matters)."""

    def __init__(self, fail_codes: list[str | None] | None = None, raises: Exception | None = None):
        self.calls: list[list[dict]] = []
        self.fail_codes = fail_codes
        self.raises = raises

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's parameter name
        self.calls.append(Entries)
        if self.raises:
            raise self.raises
        codes = self.fail_codes.pop(0) if self.fail_codes else None
        return {"Entries": [{"ErrorCode": codes} if codes else {"EventId": "e"} for _ in Entries],
                "FailedEntryCount": len(Entries) if codes else 0}


def test_the_call_event_carries_the_read_attempts_outcome_and_no_phone_number():
    item = job_item(origin="stepfunctions", reference="wf-1")
    push = parse_push(json.dumps(PUSH))
    cap = Capture()
    dtmf = row_outcome(push, json.dumps(PUSH), "webhook", 0)["dtmf"]  # as the webhook passes it
    eo.EventsOut(cap).call_completed(push, call_attrs(PUSH), Job.from_item(item), dtmf=dtmf)
    [[entry]] = cap.calls
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == ("phonon-outbound", eo.CALL_COMPLETED,
                                                                            "default")
    detail = json.loads(entry["Detail"])
    assert detail["outcome"] == {"answered": True, "attempts": 2, "duration": 53, "hangup-cause": "NORMAL_CLEARING",
                                 "call-start": "2026-11-26 15:30:01", "call-end": "2026-11-26 15:31:02",
                                 "sms-status": "DELIVERED", "dtmf": "1#9"}
    assert {k: detail[k] for k in ("phonon-uuid", "client-identifier", "reference", "job-id", "row", "origin")} == {
        "phonon-uuid": PUSH["phonon-uuid"], "client-identifier": "C-7", "reference": "wf-1", "job-id": "J1",
        "row": 7, "origin": "stepfunctions"}
    for digits in ("919812345670", "918812345672", "9812345670", "345670"):
        assert digits not in entry["Detail"]
    validator("outbound-call-completed.json").validate(envelope(eo.CALL_COMPLETED, detail))


def test_an_unanswered_call_without_dtmf_and_a_wrapped_body():
    push = {"phonon-uuid": "u-1", "callDetails": [{"duration": "0", "hangupCause": "USER_BUSY"}]}
    body = json.dumps({"body": json.dumps(push)})
    cap = Capture()
    eo.EventsOut(cap).call_completed(parse_push(body), call_attrs(push), Job.from_item(job_item()))
    detail = json.loads(cap.calls[0][0]["Detail"])
    assert detail["outcome"] == {"answered": False, "attempts": 1, "duration": 0, "hangup-cause": "USER_BUSY"}
    assert detail["origin"] == "s3" and "reference" not in detail
    validator("outbound-call-completed.json").validate(envelope(eo.CALL_COMPLETED, detail))


def test_dtmf_is_bounded_and_only_keys_of_a_keypad():
    push = {"phonon-uuid": "u-1", "callDetails": [{"duration": "9", "DTMF_Pressesd": ["1\n2", "<b>", "3" * 100]}]}
    body = json.dumps(push)
    assert keys_pressed(body, 0, eo.MAX_DTMF_CHARS) == ("12" + "3" * 100)[:eo.MAX_DTMF_CHARS]
    assert keys_pressed(body, 5, 64) is None and keys_pressed("{not json dtmf", 0, 64) is None
    assert keys_pressed(None, 0, 64) is None


def test_call_events_off_publish_nothing():
    cap = Capture()
    eo.EventsOut(cap, call_events=False).call_completed(parse_push(json.dumps(PUSH)), call_attrs(PUSH), Job(),
                                                        dtmf="1#9")
    assert cap.calls == []


# ------------------------------------------------------------------ publishing never raises
@pytest.fixture
def counted(monkeypatch):
    names: list[tuple[str, float]] = []
    monkeypatch.setattr(eo, "count", lambda name, value=1, unit="Count": names.append((name, value)))
    return names


def test_a_refused_entry_is_retried_once_then_counted_and_logged_without_its_data(counted, our_log):
    cap = Capture(fail_codes=["ThrottlingException", "ThrottlingException"])
    assert eo.EventsOut(cap).publish(eo.JOB_COMPLETED, [{"reference": "order-77"}], job="J1") == 0
    assert len(cap.calls) == 2 and counted == [("EventsNotPublished", 1)]
    assert "ThrottlingException" in our_log.text and "J1" in our_log.text
    assert "order-77" not in our_log.text


def test_a_second_try_that_succeeds_counts_nothing(counted):
    cap = Capture(fail_codes=["InternalFailure", None])
    assert eo.EventsOut(cap).publish(eo.JOB_COMPLETED, [{"a": 1}]) == 1
    assert counted == []


def test_an_api_error_and_an_oversized_entry_are_counted_not_raised(counted):
    from botocore.exceptions import ClientError

    err = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents")
    assert eo.EventsOut(Capture(raises=err)).publish(eo.JOB_COMPLETED, [{"a": 1}]) == 0
    cap = Capture()
    assert eo.EventsOut(cap).publish(eo.JOB_COMPLETED, [{"big": "x" * eo.MAX_ENTRY_BYTES}]) == 0
    assert cap.calls == [] and counted == [("EventsNotPublished", 1), ("EventsNotPublished", 1)]


def test_entry_size_follows_aws_arithmetic():
    entry = {"Source": "é", "DetailType": "ab", "Detail": "{}", "Resources": ["r"], "Time": object()}
    assert eo.entry_size(entry) == 14 + 2 + 2 + 2 + 1


# ------------------------------------------------------------------ task tokens, moto's Step Functions
@pytest.fixture
def sfn(aws_env):
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions", region_name="us-east-1")


def waiting_execution(sfn) -> tuple[str, str]:
    """An execution waiting in a `.waitForTaskToken` task; returns (its arn, the real token)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="tokens")["QueueUrl"]
    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {"StartAt": "Call", "States": {"Call": {
        "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken", "End": True,
        "Parameters": {"QueueUrl": queue, "MessageBody": {"calls.$": "$.calls", "task-token.$": "$$.Task.Token"}}}}}
    machine = sfn.create_state_machine(name="calls", definition=json.dumps(definition), roleArn=role)
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input='{"calls": []}')["executionArn"]
    for _ in range(100):
        messages = sqs.receive_message(QueueUrl=queue).get("Messages", [])
        if messages:
            return execution, json.loads(messages[0]["Body"])["task-token"]
        time.sleep(0.05)
    raise AssertionError("the task never sent its token")


def finished(sfn, execution: str) -> dict:
    for _ in range(100):
        out = sfn.describe_execution(executionArn=execution)
        if out["status"] != "RUNNING":
            return out
        time.sleep(0.05)
    raise AssertionError("the execution did not finish")


def test_a_completed_job_answers_success_with_its_detail(sfn, our_log):
    execution, token = waiting_execution(sfn)
    detail = completed(job_item(origin="stepfunctions", task_token=token))
    cap = Capture()
    eo.EventsOut(cap, sfn).job_completed(detail, token)
    out = finished(sfn, execution)
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"]) == detail
    assert len(cap.calls) == 1 and token not in json.dumps(cap.calls)
    assert "task token answered" in our_log.text and token not in our_log.text


def test_a_rejected_request_answers_failure_with_the_reason_bounded(sfn, our_log):
    execution, token = waiting_execution(sfn)
    cap = Capture()
    sent: list[dict] = []  # moto's SendTaskFailure drops `cause` (moto 5.2.5): read it as sent
    sfn.meta.events.register("provide-client-params.sfn.SendTaskFailure", lambda params, **kw: sent.append(params))
    eo.request_rejected("stepfunctions", "req-1", "wf-9", token, "no calls in the request " + "y" * 9000,
                        out=eo.EventsOut(cap, lambda: sfn))
    out = finished(sfn, execution)
    assert out["status"] == "FAILED"
    assert out["error"] == eo.REJECTED_ERROR
    [[entry]] = cap.calls
    detail = json.loads(entry["Detail"])
    [params] = sent
    assert params["error"] == eo.REJECTED_ERROR and params["taskToken"] == token
    assert params["cause"] == detail["reason"] and params["cause"].startswith("no calls in the request")
    assert len(params["cause"]) <= eo.MAX_CAUSE_CHARS
    assert detail["status"] == "REJECTED" and detail["source"] == {"origin": "stepfunctions", "request-id": "req-1",
                                                                   "reference": "wf-9"}
    assert our_log.lines and token not in our_log.text and token not in entry["Detail"]


def test_an_expired_or_unknown_token_is_logged_and_swallowed(sfn, counted, our_log):
    execution, token = waiting_execution(sfn)
    out = eo.EventsOut(Capture(), sfn)
    assert out.answer_task(token, completed(job_item())) is True
    assert finished(sfn, execution)["status"] == "SUCCEEDED"
    assert out.answer_task(token, completed(job_item())) is False  # its execution has ended
    assert out.answer_task("not-a-token-" + TOKEN_LIKE, completed(job_item())) is False
    assert counted == [("TaskTokensExpired", 1), ("TaskTokensExpired", 1)]
    assert "InvalidToken" in our_log.text
    assert token not in our_log.text and TOKEN_LIKE not in our_log.text


def test_no_token_no_answer():
    class Boom:
        def __getattr__(self, name):
            raise AssertionError("Step Functions must not be called")

    assert eo.EventsOut(Capture(), Boom()).answer_task("", completed(job_item())) is False


def test_any_other_answer_failure_is_counted_and_never_raised(counted, our_log):
    from botocore.exceptions import ClientError

    class Denied:
        def send_task_success(self, **kw):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": f"token {TOKEN_LIKE}"}},
                              "SendTaskSuccess")

    assert eo.EventsOut(Capture(), Denied()).answer_task(TOKEN_LIKE, completed(job_item())) is False
    assert counted == [("TaskAnswersFailed", 1)]
    assert "AccessDeniedException" in our_log.text and TOKEN_LIKE not in our_log.text


def test_a_call_event_that_cannot_be_built_is_counted_not_raised(counted):
    cap = Capture()
    attrs = {k: v for k, v in call_attrs(PUSH).items() if k != "job"}  # a bug upstream: no job
    eo.EventsOut(cap).call_completed(parse_push(json.dumps(PUSH)), attrs, Job())
    assert cap.calls == [] and counted == [("EventsNotPublished", 1)]
