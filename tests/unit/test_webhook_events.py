"""The real webhook handler fed with AWS's own published Function URL sample events
(tests/events/aws/README.md names each file's source). Only a body and a credential header
are adapted, on a copy; the envelopes stay as AWS publishes them."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from phonon_outbound import wiring

from .test_webhook_hostile import JOB, Hook, hook, webhook_stack  # noqa: F401 - fixtures

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

SAMPLES = Path(__file__).resolve().parents[1] / "events" / "aws"
GET_SAMPLES = ["functionurl-powertools-python-lambdaFunctionUrlEvent.json",
               "functionurl-powertools-python-lambdaFunctionUrlEventWithHeaders.json",
               "functionurl-powertools-typescript-get-request.json"]
POST_SAMPLES = ["functionurl-powertools-python-lambdaFunctionUrlIAMEvent.json",
                "functionurl-powertools-python-lambdaFunctionUrlEventPathTrailingSlash.json",
                "functionurl-powertools-typescript-base.json",
                "functionurl-powertools-typescript-iam-auth.json",
                "functionurl-powertools-typescript-invalid.json",
                "functionurl-aws-lambda-go-lambda-urls-request.json"]
SAM_HTTP_API = "functionurl-sam-cli-HttpApi.json"
PUSH = json.loads((Path(__file__).resolve().parents[2] / "events" / "phonon-flow-end-push.json").read_text())


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def sam_event(body: bytes | None = None, method: str = "POST") -> dict:
    """SAM CLI's template rendered as `sam local generate-event apigateway http-api-proxy` does:
    the body base64-encoded (default `{"test":"body"}`), the other tags at their defaults."""
    text = (SAMPLES / SAM_HTTP_API).read_text()
    encoded = base64.b64encode(b'{"test":"body"}' if body is None else body).decode()
    for tag, value in {"body": encoded, "method": method, "path": "path/to/resource", "stage": "$default",
                       "account_id": "123456789012", "dns_suffix": "us-east-1.amazonaws.com"}.items():
        text = text.replace("{{{" + tag + "}}}", value)
    assert "{{{" not in text
    return json.loads(text)


def with_credentials(h: Hook, event: dict) -> dict:
    event = copy.deepcopy(event)
    event.setdefault("headers", {})["authorization"] = h.auth
    return event


def our_push(row: int = 1) -> dict:
    push = copy.deepcopy(PUSH)
    push["keys"] = [k if k["name"] != "$flow.key.OutboundRef" else {**k, "value": f"{JOB}.{row}"}
                    for k in push["keys"]]
    return push


def test_the_samples_are_all_kept_and_named_in_the_readme():
    readme = (SAMPLES / "README.md").read_text()
    names = sorted(p.name for p in SAMPLES.glob("functionurl-*.json"))
    assert names == sorted([*GET_SAMPLES, *POST_SAMPLES, SAM_HTTP_API])
    assert all(f"`{n}`" in readme for n in names)


@pytest.mark.parametrize("name", GET_SAMPLES)
def test_a_get_sample_is_answered_405(hook, name):  # noqa: F811
    assert hook.call(with_credentials(hook, sample(name)))[0] == 405
    assert hook.results() == []


@pytest.mark.parametrize("name", [*POST_SAMPLES, SAM_HTTP_API])
def test_a_post_sample_without_our_credential_is_answered_401(hook, name):  # noqa: F811
    event = sam_event() if name == SAM_HTTP_API else sample(name)
    assert hook.call(event) == (401, {"error": "unauthorized"})
    assert hook.results() == []


@pytest.mark.parametrize("name", [*POST_SAMPLES, SAM_HTTP_API])
def test_a_post_sample_with_its_own_body_is_answered_400(hook, name):  # noqa: F811
    event = sam_event() if name == SAM_HTTP_API else sample(name)
    status, body = hook.call(with_credentials(hook, event))
    assert status == 400 and body["error"] in ("body is not JSON", "empty body", "no phonon-uuid in the push")
    assert hook.results() == []


@pytest.mark.parametrize("name", POST_SAMPLES)
def test_a_post_sample_carrying_a_flow_end_push_is_stored(hook, name):  # noqa: F811
    event = with_credentials(hook, sample(name))
    event["body"] = json.dumps(our_push())
    assert hook.call(event) == (200, {"ok": True, "phonon-uuid": PUSH["phonon-uuid"], "matched": True})
    item = wiring.store().results.get_result(PUSH["phonon-uuid"])
    assert (item["job"], item["row"], item["duration"], item["recordings"]) == (JOB, 1, 53, 1)


def test_the_sam_base64_event_carrying_a_flow_end_push_is_stored(hook):  # noqa: F811
    event = with_credentials(hook, sam_event(json.dumps(our_push(2)).encode()))
    assert event["isBase64Encoded"] is True
    assert hook.call(event) == (200, {"ok": True, "phonon-uuid": PUSH["phonon-uuid"], "matched": True})
    assert wiring.store().results.get_result(PUSH["phonon-uuid"])["row"] == 2
    assert hook.call(with_credentials(hook, sam_event(json.dumps(our_push(2)).encode(), method="GET")))[0] == 405


@pytest.mark.parametrize(("body", "error"), [
    (b'{"phonon-uuid": "\xff\xfe\xfd"}', "body is not UTF-8"),
    (b"\x1f\x8b\x08\x00compressed", "body is not UTF-8"),
    (b"phonon-uuid=x&keys=y", "body is not JSON"),
    (b"{\"phonon-uuid\": \"x\",", "body is not JSON"),
])
def test_the_sam_base64_event_with_a_body_that_is_not_utf8_json_is_answered_400(hook, body, error):  # noqa: F811
    assert hook.call(with_credentials(hook, sam_event(body))) == (400, {"error": error})
    assert hook.results() == []


def test_the_sam_event_with_a_body_that_is_not_base64_is_answered_400(hook):  # noqa: F811
    event = with_credentials(hook, sam_event())
    event["body"] = "not*base64"
    assert hook.call(event) == (400, {"error": "body is not valid base64"})
