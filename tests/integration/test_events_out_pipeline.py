"""Events out through the real handlers against moto: a file's run ends with exactly one
`Outbound Job Completed`, a matched flow-end push makes one `Outbound Call Completed` (none
with PUBLISH_CALL_EVENTS=false). The events are read twice: as the code put them (a botocore
hook on the wiring's EventBridge client) and as a target receives them (the rule pattern the
README gives, routed to an SQS queue in moto), and each validates against schemas/."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import boto3
import pytest

from phonon_outbound import events_out, wiring

from ..unit.test_schemas import validator
from .conftest import Ctx, csv_rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def readme_pattern() -> dict:
    """The rule pattern the README gives ("Integrating from other AWS services", "Hearing back")."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Hearing back"):]
    return json.loads(re.search(r'^\{"source": \["phonon-outbound"\].*\}$', section, re.M).group(0))


PATTERN = readme_pattern()


class Events:
    def __init__(self) -> None:
        self.put: list[dict] = []
        sqs = boto3.client("sqs", region_name="us-east-1")
        self.sqs = sqs
        self.queue = sqs.create_queue(QueueName="crm-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        eb = boto3.client("events", region_name="us-east-1")
        eb.put_rule(Name="crm", EventPattern=json.dumps(PATTERN), EventBusName="default")
        eb.put_targets(Rule="crm", EventBusName="default", Targets=[{"Id": "q", "Arn": arn}])
        wiring.client("events").meta.events.register("provide-client-params.events.PutEvents",
                                                     lambda params, **kw: self.put.extend(params["Entries"]))

    def put_of(self, detail_type: str) -> list[dict]:
        return [e for e in self.put if e["DetailType"] == detail_type]

    def delivered(self) -> list[dict]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])


def valid(entry: dict) -> dict:
    """The PutEvents entry as a target would see it, validated; returns its detail."""
    schema = {events_out.JOB_COMPLETED: "outbound-job-completed.json",
              events_out.CALL_COMPLETED: "outbound-call-completed.json"}[entry["DetailType"]]
    detail = json.loads(entry["Detail"])
    validator(schema).validate({"source": entry["Source"], "detail-type": entry["DetailType"], "detail": detail})
    return detail


def test_a_cancelled_job_ends_with_one_job_completed_event_saying_cancelled(make_harness):
    """The summary's per-status counts stay numbers when a job is cancelled (its reason is
    `cancelled_reason`): the event is built from them, and was lost when the reason took the
    `cancelled` count's place."""
    from phonon_outbound.control import ControlService, finisher_settled

    h = make_harness()
    events = Events()
    obj = h.upload("cancel-me.csv", csv_rows(30))
    h.ingest(obj)
    store = wiring.store()
    ControlService(store, h.bucket, finisher_settled(store, wiring.finisher())).apply(
        "cancel", {"job": obj.job_id}, "dropped by mistake")
    h.drain()
    [entry] = events.put_of(events_out.JOB_COMPLETED)
    detail = valid(entry)
    assert detail["status"] == "CANCELLED" and detail["counts"]["CANCELLED"] == 30
    assert h.summary(obj)["cancelled"] == 30 and "dropped by mistake" in h.summary(obj)["cancelled_reason"]
    assert h.sim.stats()["requests"] == 0


def test_a_file_run_emits_exactly_one_job_completed_event_that_validates(make_harness):
    h = make_harness()
    events = Events()
    obj = h.upload("events.csv", csv_rows(30) + b"C-bad,12,Nobody\n")
    h.ingest(obj)
    h.drain()
    [entry] = events.put_of(events_out.JOB_COMPLETED)
    detail = valid(entry)
    assert detail["job-id"] == obj.job_id and detail["status"] == "COMPLETED" and detail["rows"] == 31
    assert detail["counts"] == {"ACCEPTED": 30, "REJECTED": 1, "DUPLICATE": 0, "FAILED": 0, "CANCELLED": 0,
                                "SUPPRESSED": 0}
    assert detail["source"] == {"origin": "s3", "bucket": obj.bucket, "key": obj.key, "version": obj.version_id}
    csv_key, summary_key = h.report_keys(obj)
    assert detail["report"] == {"bucket": h.bucket, "results-key": csv_key, "summary-key": summary_key}
    assert len(h.report(obj)) == 31  # the report is there when the event says so
    [delivered] = events.delivered()  # the README's pattern receives it, once
    assert delivered["detail-type"] == "Outbound Job Completed" and delivered["detail"] == detail
    validator("outbound-job-completed.json").validate(delivered)
    assert "98000000" not in entry["Detail"]  # no phone number of the file


def test_a_rejected_file_emits_one_rejected_event_with_its_reason(make_harness):
    h = make_harness()
    events = Events()
    obj = h.upload("nophone.csv", b"client-identifier,name\nA,B\n")
    h.ingest(obj)
    [entry] = events.put_of(events_out.JOB_COMPLETED)
    detail = valid(entry)
    assert detail["status"] == "REJECTED" and detail["reason"] == h.summary(obj)["error"]
    assert set(detail["counts"].values()) == {0}


def push_event(h, job: str, row: int, uuid: str) -> dict:
    creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=h.env["WEBHOOK_SECRET_NAME"])["SecretString"])
    event = json.loads((h.stack.root / "events" / "webhook-flow-end.json").read_text())
    push = json.loads((h.stack.root / "events" / "phonon-flow-end-push.json").read_text())
    push["phonon-uuid"] = uuid
    push["keys"] = [{"name": "$flow.key.OutboundRef", "value": f"{job}.{row}"}]
    event["body"] = json.dumps(push)
    event["headers"]["authorization"] = "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()
    return event


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_a_matched_push_emits_one_call_completed_event_when_on_and_none_when_off(make_harness, on):
    import webhook_handler

    h = make_harness(publish_call_events=str(on).lower())
    obj = h.upload("calls.csv", csv_rows(3))
    h.ingest(obj)
    h.drain()
    events = Events()  # after the job's own event
    uuid = "11111111-2222-3333-4444-555555555555"
    assert webhook_handler.handler(push_event(h, obj.job_id, 2, uuid), Ctx("webhook"))["statusCode"] == 200
    unmatched = push_event(h, "nosuchjob", 1, "99999999-2222-3333-4444-555555555555")
    assert webhook_handler.handler(unmatched, Ctx("webhook"))["statusCode"] == 200
    calls = events.put_of(events_out.CALL_COMPLETED)
    if not on:
        assert calls == [] and events.delivered() == []
        return
    [entry] = calls  # the unmatched push is not one of our calls: no event
    detail = valid(entry)
    assert (detail["phonon-uuid"], detail["job-id"], detail["row"], detail["client-identifier"]) == (
        uuid, obj.job_id, 2, "C-000001")
    assert detail["outcome"]["answered"] is True and detail["outcome"]["dtmf"] == "1"
    assert detail["outcome"]["hangup-cause"] == "NORMAL_CLEARING"
    assert "9812345670" not in entry["Detail"] and "8069000000" not in entry["Detail"]
    [delivered] = events.delivered()
    assert delivered["detail"] == detail


@pytest.fixture
def executing_sfn(monkeypatch):
    """moto's Step Functions running state machines for real (its ASL interpreter)."""
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    return boto3.client("stepfunctions", region_name="us-east-1")


def test_a_job_with_a_task_token_answers_its_execution_when_the_report_is_written(make_harness, executing_sfn):
    """The token as the intake puts it on the job (origin stepfunctions); the finisher, run by
    the last dispatch, answers it: the waiting execution succeeds with the job event's detail."""
    from ..unit.test_events_out import finished, waiting_execution

    h = make_harness()
    events = Events()
    execution, token = waiting_execution(executing_sfn)
    obj = h.upload("workflow.csv", csv_rows(5))
    h.ingest(obj)
    wiring.store().jobs.update_job(obj.job_id, origin="stepfunctions", request_id="wf-1", reference="order-9",
                                   task_token=token)
    h.drain()
    out = finished(executing_sfn, execution)
    assert out["status"] == "SUCCEEDED"
    output = json.loads(out["output"])
    [entry] = events.put_of(events_out.JOB_COMPLETED)
    assert output == valid(entry)
    assert output["counts"]["ACCEPTED"] == 5 and output["source"]["reference"] == "order-9"
    assert token not in entry["Detail"]
