"""A request's detail → its contact file, key and metadata (docs/events-in.md); no AWS."""

from __future__ import annotations

import hashlib
import json

import pytest

from phonon_outbound.flows import flow_from_key
from phonon_outbound.intake import (
    MAX_CALLS,
    Request,
    RequestRejected,
    eventbridge_envelope,
    is_sqs_event,
    parse,
    request_origin,
)

CALL = {"client-identifier": "A-1", "contact-numbers": ["9812345678"]}


def test_a_request_becomes_a_json_contact_file_with_its_identity_as_metadata():
    req = parse({"flow-id": "DemoFlw1", "reference": "order 77", "calls": [CALL, CALL]}, "eventbridge", "ev-1")
    assert req.key == "incoming/requests/eventbridge/ev-1.json"
    assert json.loads(req.body()) == {"flow-id": "DemoFlw1", "calls": [CALL, CALL]}
    assert req.metadata() == {"phonon-origin": "eventbridge", "phonon-request-id": "ev-1", "flow-id": "DemoFlw1",
                              "phonon-reference": "order 77"}


def test_one_call_is_a_file_of_one_call_and_no_flow_means_none_in_the_file():
    req = parse({"call": CALL}, "eventbridge", "ev-2")
    assert json.loads(req.body()) == {"calls": [CALL]}
    assert "flow-id" not in req.metadata()


def test_a_task_token_makes_a_queue_message_a_step_functions_request_named_by_its_request_id():
    req = parse({"task-token": "tok", "request-id": "wf/run 1", "calls": [CALL]}, "sqs", "sha")
    assert req.origin == "stepfunctions" and req.metadata()["phonon-task-token"] == "tok"
    assert req.request_id == hashlib.sha256(b"wf/run 1").hexdigest()  # not safe in a key: hashed
    assert parse({"task-token": "tok", "request-id": "run-1", "calls": [CALL]}, "sqs", "sha").request_id == "run-1"
    assert parse({"request-id": "run-1", "calls": [CALL]}, "sqs", "sha").request_id == "sha"  # a plain message


@pytest.mark.parametrize(("doc", "reason"), [
    ([CALL], "the request must be a JSON object"),
    ({}, "no calls: give 'calls' (a list) or 'call' (one call)"),
    ({"calls": []}, "no calls: 'calls' is empty"),
    ({"calls": CALL}, "'calls' must be a list"),
    ({"call": [CALL]}, "'call' must be an object"),
    ({"calls": [CALL], "call": CALL}, "give either 'calls' or 'call', not both"),
    ({"calls": [CALL] * (MAX_CALLS + 1)}, "too many calls: 10,001 (at most 10,000 per request)"),
])
def test_requests_refused_whole_say_why(doc, reason):
    with pytest.raises(RequestRejected) as err:
        parse(doc, "sqs", "x")
    assert err.value.reason == reason


def test_exactly_the_limit_is_taken_and_a_bad_call_is_left_to_ingest():
    assert len(parse({"calls": [CALL] * MAX_CALLS}, "sqs", "x").detail.all_calls()) == MAX_CALLS
    assert parse({"calls": ["not an object", 7]}, "sqs", "x").detail.all_calls() == ["not an object", 7]


@pytest.mark.parametrize("doc", [
    {"reference": "r" * 257, "calls": [CALL]},
    {"reference": "Zürich", "calls": [CALL]},
    {"task-token": "t" * 1025, "calls": [CALL]},
    {"flow-id": 9812345678, "calls": [CALL]},
])
def test_what_s3_metadata_cannot_carry_is_refused_and_the_reason_quotes_no_value(doc):
    with pytest.raises(RequestRejected) as err:
        parse(doc, "sqs", "x")
    assert "Zürich" not in err.value.reason and "9812345678" not in err.value.reason
    assert err.value.reason.split(":")[0] in ("reference", "task-token", "flow-id")


def test_an_eventbridge_envelope_is_ours_only_with_the_detail_type_and_its_id_names_the_request():
    env = eventbridge_envelope({"id": "abc-1", "detail-type": "Outbound Calls Requested",
                                "detail": {"reference": "r1", "calls": []}})
    assert env is not None and (env.origin, env.request_id, env.reference) == ("eventbridge", "abc-1", "r1")
    assert eventbridge_envelope({"id": "x", "detail-type": "Object Created", "detail": {}}) is None
    assert eventbridge_envelope(["not", "an", "event"]) is None
    assert not is_sqs_event({"detail-type": "Outbound Calls Requested"})
    assert is_sqs_event({"Records": [{"eventSource": "aws:sqs"}]})


def test_only_a_request_file_is_believed_about_its_origin():
    meta = {"phonon-origin": "stepfunctions", "phonon-request-id": "r", "phonon-task-token": "t",
            "phonon-reference": "ref"}
    assert request_origin("incoming/requests/stepfunctions/r.json", meta) == {
        "origin": "stepfunctions", "request_id": "r", "reference": "ref", "task_token": "t"}
    assert request_origin("incoming/upload.csv", meta)["origin"] == "s3"
    assert request_origin("incoming/upload.csv", meta)["task_token"] == ""
    assert request_origin("incoming/requests/x.json", {"phonon-origin": "ftp"})["origin"] == "s3"


def test_the_requests_folder_is_not_read_as_a_flow_id():
    assert flow_from_key("incoming/requests/sqs/abc.json") is None
    assert flow_from_key("incoming/DemoFlw1/abc.json") == "DemoFlw1"


def test_a_request_is_a_frozen_value():
    req = parse({"calls": [CALL]}, "sqs", "x")
    assert isinstance(req, Request)
    with pytest.raises(AttributeError):
        req.origin = "s3"  # type: ignore[misc]
