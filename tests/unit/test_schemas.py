"""schemas/*.json (draft 2020-12): every sample in events/ validates against its schema (a JSON
sample no schema claims fails), the schemas agree with the code's vocabularies (statuses,
origins), and they refuse wrong shapes. The events the code emits are validated where they are
emitted: tests/unit/test_events_out.py and tests/integration/test_events_out_pipeline.py."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from phonon_outbound.events_out import Origin
from phonon_outbound.records import JobStatus
from phonon_outbound.status import Status

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EVENTS = ROOT / "events"


def _docs() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))}


def validator(name: str) -> Draft202012Validator:
    docs = _docs()
    registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs.values())
    return Draft202012Validator(docs[name], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


# ------------------------------------------------------------------ samples -> schemas
def whole(doc: dict) -> Iterator[dict]:
    yield doc


def sqs_bodies(doc: dict) -> Iterator[dict]:
    for record in doc["Records"]:
        yield json.loads(record["body"])


def url_body(doc: dict) -> Iterator[dict]:
    body = doc["body"]
    yield json.loads(base64.b64decode(body) if doc.get("isBase64Encoded") else body)


Check = tuple[str, Callable[[dict], Iterator[dict]]]
SAMPLES: dict[str, list[Check]] = {
    "outbound-job-completed.json": [("outbound-job-completed.json", whole)],
    "outbound-call-completed.json": [("outbound-call-completed.json", whole)],
    "phonon-flow-end-push.json": [("flow-end-push.json", whole)],
    "webhook-flow-end.json": [("webhook-function-url-event.json", whole), ("flow-end-push.json", url_body)],
    "s3-put.json": [("s3-event-notification.json", whole)],
    "s3-eventbridge.json": [("s3-eventbridge-event.json", whole)],
    "sqs-chunk-batch.json": [("chunk-message.json", sqs_bodies)],
    "sqs-intake-message.json": [("intake-sqs-message.json", sqs_bodies)],  # the intake queue (events in)
    "sqs-report-request.json": [("report-request.json", sqs_bodies)],  # the report queue (the report function)
}
# An EventBridge envelope is claimed by its detail-type (samples of the ways in need no entry).
BY_DETAIL_TYPE = {"Outbound Calls Requested": "outbound-calls-requested.json",
                  "Outbound Job Completed": "outbound-job-completed.json",
                  "Outbound Call Completed": "outbound-call-completed.json",
                  "Outbound Control": "outbound-control.json",
                  "Object Created": "s3-eventbridge-event.json", "Object Deleted": "s3-eventbridge-event.json"}
NOT_MESSAGES = {"local-env.json": "`sam local invoke --env-vars` settings, not an event",
                "schedule-event.json": "EventBridge's own Scheduled Event (report sweep, reconciler, watchdog): "
                                       "the functions read nothing in it"}


def checks_for(path: Path) -> list[Check]:
    if path.name in SAMPLES:
        return SAMPLES[path.name]
    doc = json.loads(path.read_text())
    if isinstance(doc, dict) and doc.get("detail-type") in BY_DETAIL_TYPE:
        return [(BY_DETAIL_TYPE[doc["detail-type"]], whole)]
    return []


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_every_json_sample_validates_against_its_schema(path):
    if path.name in NOT_MESSAGES:
        return
    checks = checks_for(path)
    assert checks, f"events/{path.name} has no schema: map it in SAMPLES (or NOT_MESSAGES, saying why)"
    doc = json.loads(path.read_text())
    for schema, parts in checks:
        found = list(parts(doc))
        assert found, (path.name, schema)
        for part in found:
            validator(schema).validate(part)


def test_every_schema_is_valid_draft_2020_12_and_the_mapping_names_only_real_files():
    for name, doc in _docs().items():
        Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].endswith("/" + name)
    named = {s for checks in SAMPLES.values() for s, _ in checks} | set(BY_DETAIL_TYPE.values())
    assert named <= set(_docs())
    assert {"outbound-job-completed.json", "outbound-call-completed.json", "outbound-calls-requested.json",
            "intake-sqs-message.json", "chunk-message.json", "flow-end-push.json"} <= set(_docs())


def test_the_schemas_speak_the_codes_vocabulary():
    job = _docs()["outbound-job-completed.json"]["$defs"]["detail"]["properties"]
    assert job["counts"]["required"] == [s.value for s in Status]
    assert job["status"]["enum"] == [s.value for s in (JobStatus.COMPLETED, JobStatus.REJECTED, JobStatus.FAILED,
                                                       JobStatus.CANCELLED)]
    assert job["source"]["properties"]["origin"]["enum"] == [o.value for o in Origin]
    call = _docs()["outbound-call-completed.json"]["$defs"]["detail"]["properties"]
    assert call["origin"]["enum"] == [o.value for o in Origin]


# ------------------------------------------------------------------ wrong shapes are refused
def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def refused(schema: str, doc: object) -> None:
    with pytest.raises(ValidationError):
        validator(schema).validate(doc)


def changed(doc: dict, path: str, value: object = None, *, drop: bool = False) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split("/")
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if drop:
        del node[last]
    else:
        node[last] = value
    return doc


def test_the_job_event_refuses_wrong_shapes():
    job = sample("outbound-job-completed.json")
    validator("outbound-job-completed.json").validate(job)
    for doc in (changed(job, "detail/counts/SUPPRESSED", drop=True),  # every status, 0 included
                changed(job, "detail/counts/ACCEPTED", -1),
                changed(job, "detail/rows", "300"),
                changed(job, "detail/phone", "919812345670"),  # nothing but the documented fields
                changed(job, "detail/source/origin", "ftp"),
                changed(job, "detail/report", drop=True),  # a completed job has a report
                changed(job, "detail/reason", "why"),  # and no reason
                changed(job, "detail/status", "REJECTED"),  # a rejection says why
                changed(job, "detail/job-id", drop=True),  # only a refused request has no job
                changed(job, "detail-type", "File completed"),
                changed(job, "source", "someone-else")):
        refused("outbound-job-completed.json", doc)
    rejected = changed(changed(changed(job, "detail/status", "REJECTED"), "detail/job-id", drop=True),
                       "detail/report", drop=True)
    refused("outbound-job-completed.json", rejected)  # a rejection says why
    validator("outbound-job-completed.json").validate(changed(changed(rejected, "detail/reason", "no calls"),
                                                              "detail/rows", 0))


def test_the_call_event_refuses_wrong_shapes():
    call = sample("outbound-call-completed.json")
    validator("outbound-call-completed.json").validate(call)
    for doc in (changed(call, "detail/outcome/callee-number", "919812345670"),
                changed(call, "detail/numbers", ["919812345670"]),
                changed(call, "detail/outcome/dtmf", "1; rm"),
                changed(call, "detail/outcome/answered", drop=True),
                changed(call, "detail/row", 0),
                changed(call, "detail/phonon-uuid", "has space")):
        refused("outbound-call-completed.json", doc)


def request_event(detail: dict) -> dict:
    return {"source": "crm.orders", "detail-type": "Outbound Calls Requested", "detail": detail}


CALL = {"client-identifier": "ORD-1", "contact-numbers": ["919812345670"],
        "keys": [{"name": "$flow.key.Order", "value": "1"}]}


def test_the_request_in_accepts_calls_or_one_call_and_refuses_wrong_shapes():
    ok = validator("outbound-calls-requested.json")
    ok.validate(request_event({"flow-id": "DemoFlw1", "reference": "flight-9", "calls": [CALL]}))
    ok.validate(request_event({"call": CALL}))
    ok.validate(request_event({"calls": [CALL] * 10_000}))
    for detail in ({"calls": [CALL], "call": CALL},  # not both
                   {"calls": []},
                   {"calls": [CALL] * 10_001},
                   {"calls": CALL},
                   {"calls": [{**CALL, "security-id": "s" * 64}]},
                   {"calls": [CALL], "security-id": "s" * 64},
                   {"calls": [CALL], "flow-id": "not-a-flow"},
                   {"calls": [CALL], "reference": "r" * 257},
                   {"calls": [CALL], "reference": "line\nbreak"},
                   {"flow-id": "DemoFlw1"}):
        refused("outbound-calls-requested.json", request_event(detail))
    refused("outbound-calls-requested.json", {"detail-type": "Outbound Calls Requested", "source": "x",
                                              "detail": "not an object"})


def test_the_intake_message_is_the_request_plus_a_task_token():
    ok = validator("intake-sqs-message.json")
    ok.validate({"calls": [CALL], "task-token": "AQCEAAAAKgAAAA"})
    ok.validate({"call": CALL, "request-id": "wf-1"})
    for doc in ({"calls": [CALL], "task-token": ""}, {"calls": [CALL], "task-token": "t" * 1025},
                {"task-token": "t"}, {"calls": [{**CALL, "security-id": "x"}]}):
        refused("intake-sqs-message.json", doc)


def test_the_chunk_message_refuses_wrong_shapes():
    body = next(sqs_bodies(sample("sqs-chunk-batch.json")))
    validator("chunk-message.json").validate({"v": 2, "job": "J", "flow": "DemoFlw1", "chunk": 0, "rows": [1],
                                              "calls_gz": "H4sI"})
    for doc in ({**body, "v": 2},  # v2 carries calls_gz
                {**body, "rows": []}, {**body, "chunk": -1}, {**body, "job": ""},
                {**body, "security-id": "x"}, {k: v for k, v in body.items() if k != "calls"}):
        refused("chunk-message.json", doc)


def test_the_push_refuses_wrong_shapes():
    push = sample("phonon-flow-end-push.json")
    validator("flow-end-push.json").validate({"body": push})
    validator("flow-end-push.json").validate({"body": json.dumps(push)})
    for doc in ({**push, "phonon-uuid": "bad uuid"}, {k: v for k, v in push.items() if k != "phonon-uuid"},
                {**push, "callDetails": [{}] * 101}, {**push, "recordingUrls": ["u" * 2049]}):
        refused("flow-end-push.json", doc)


def test_the_readmes_examples_validate():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Integrating from other AWS services"):]
    entries = json.loads(section.split("--entries '", 1)[1].split("'", 1)[0])
    for e in entries:
        validator("outbound-calls-requested.json").validate(
            {"source": e["Source"], "detail-type": e["DetailType"], "detail": json.loads(e["Detail"])})
    validator("intake-sqs-message.json").validate(json.loads(section.split("--message-body '", 1)[1].split("'", 1)[0]))


def test_the_control_event_refuses_wrong_shapes():
    event = sample("eventbridge-outbound-control.json")
    validator("outbound-control.json").validate(event)
    for detail in ({"action": "stop", "job": "j1"}, {"action": "pause"}, {"action": "pause", "job": "j1", "flow": "Flow1234"},
                   {"action": "cancel", "flow": "Flow1234"}, {"action": "pause", "job": "j1", "version": "v1"},
                   {"action": "pause", "flow": "short"}, {"action": "pause", "job": "j1", "extra": 1}):
        refused("outbound-control.json", changed(event, "detail", detail))
    for detail in ({"action": "resume", "flow": "Flow1234"}, {"action": "cancel", "job": "j1", "reason": "oops"},
                   {"action": "pause", "key": "incoming/a.csv", "version": "v1"}):
        validator("outbound-control.json").validate(changed(event, "detail", detail))


def test_the_control_events_limit_takes_a_cap_and_only_it_does():
    event = sample("eventbridge-outbound-control.json")
    for detail in ({"action": "limit", "job": "j1", "per_minute": 100}, {"action": "limit", "flow": "Flow1234",
                                                                           "per_minute": "none"},
                   {"action": "limit", "key": "incoming/a.csv", "per_minute": 0}):
        validator("outbound-control.json").validate(changed(event, "detail", detail))
    for detail in ({"action": "limit", "job": "j1"}, {"action": "limit", "job": "j1", "per_minute": -1},
                   {"action": "limit", "job": "j1", "per_minute": "fast"},
                   {"action": "limit", "job": "j1", "per_minute": 1.5}, {"action": "pause", "job": "j1", "per_minute": 10}):
        refused("outbound-control.json", changed(event, "detail", detail))
