"""Flow-end push parsing: lenient, as docs/webhook.md says (wrapped or not, fields optional)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phonon_outbound.webhook import Credentials, WebhookError, WebhookService, outcome_of, parse_push


def test_a_wrapped_push_is_unwrapped():
    push = parse_push(json.dumps({"body": {"phonon-uuid": "u-1", "keys": []}}))
    assert push.phonon_uuid == "u-1"


def test_a_push_wrapped_in_a_json_string_is_unwrapped():
    push = parse_push(json.dumps({"body": json.dumps({"phonon-uuid": "u-2"})}))
    assert push.phonon_uuid == "u-2"


@pytest.mark.parametrize("body", ["not json", "[1,2]", json.dumps({"keys": []})])
def test_unusable_pushes_are_refused_with_400(body):
    with pytest.raises(WebhookError) as err:
        parse_push(body)
    assert err.value.status == 400


def test_outcome_of_a_connected_call_after_a_failed_attempt():
    doc = {"callDetails": [
        {"calleeNumber": "91981", "duration": "0", "hangupCause": "NO_ANSWER"},
        {"calleeNumber": "91982", "connectTime": "2026-11-26 10:00:05", "duration": "61000", "hangupCause": "16"},
    ], "smsDetails": [{"deliveryStatus": "DELIVERED"}], "emailDetails": [{"deliveryStatus": "BOUNCED"}]}
    out = outcome_of(doc)
    assert out == {"attempts": 2, "connected": True, "duration": 61000, "hangup_cause": "16",
                   "sms_status": "DELIVERED", "email_status": "BOUNCED"}


def test_outcome_of_an_unanswered_call():
    out = outcome_of({"callDetails": [{"hangupCause": "NO_ANSWER", "duration": 0}]})
    assert out["connected"] is False and out["attempts"] == 1 and out["hangup_cause"] == "NO_ANSWER"


def test_outcome_of_a_push_without_details_is_empty():
    assert outcome_of({"phonon-uuid": "x"}) == {}


def test_the_correlation_key_is_found_with_or_without_its_prefix():
    svc = WebhookService(store=None, correlation_key="OutboundRef")  # type: ignore[arg-type]
    assert svc.correlation_ref({"keys": [{"name": "$flow.key.OutboundRef", "value": "job.3"}]}) == "job.3"
    assert svc.correlation_ref({"keys": [{"name": "OutboundRef", "value": "job.4"}]}) == "job.4"
    assert svc.correlation_ref({"keys": {"$flow.key.OutboundRef": "job.5"}}) == "job.5"
    assert svc.correlation_ref({"keys": [{"name": "$flow.key.Other", "value": "x"}]}) is None


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_basic_auth_accepts_only_the_configured_credentials():
    creds = Credentials("phonon", "s3cret")
    assert creds.check(_basic("phonon", "s3cret"))
    assert not creds.check(_basic("phonon", "wrong"))
    assert not creds.check(_basic("other", "s3cret"))
    assert not creds.check(None)
    assert not creds.check("Bearer abc")
    assert not creds.check("Basic !!!notbase64")


@pytest.mark.parametrize("header", [
    "", "Basic", "Basic ", "basic", "Basic ñ", "Bäsic " + base64.b64encode(b"phonon:s3cret").decode(),
    "Basic cGhvbm9uOnPDqWNyZXQ=ñ", "Basic " + "A" * 100_000, "Basic !!!", "Basic cGhvbm9", "Basic \x00",
    "Basic " + base64.b64encode(b"phonons3cret").decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    "Basic " + base64.b64encode("phonon:s3cret".encode("utf-16")).decode(), 12345, b"Basic x", ["Basic x"],
])
def test_an_odd_authorization_header_is_simply_not_the_credentials(header):
    assert Credentials("phonon", "s3cret").check(header) is False


def test_a_password_with_a_colon_and_non_ascii_letters_is_checked_exactly():
    creds = Credentials("phonon", "pä:ss")
    assert creds.check(_basic("phonon", "pä:ss"))
    assert not creds.check(_basic("phonon", "pä:s"))


@pytest.mark.parametrize("body", ['{"phonon-uuid": "u", "x": NaN}', '{"phonon-uuid": "u", "x": 1e999}',
                                  '{"phonon-uuid": "u", "x": -Infinity}', "[" * 100_000])
def test_non_finite_numbers_and_deep_nesting_are_not_json_we_take(body):
    with pytest.raises(WebhookError) as err:
        parse_push(body)
    assert err.value.status == 400


# ------------------------------------------------------------------------------ properties

_SCALARS = st.none() | st.booleans() | st.integers(min_value=-(10**500), max_value=10**500) | st.floats() | st.text()
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                           max_size=4), max_leaves=20)
_FIELDS = ["phonon-uuid", "uuid", "callDetails", "keys", "smsDetails", "emailDetails", "recordingUrls", "body",
           "duration", "hangupCause", "startTime", "connectTime", "deliveryStatus", "name", "value"]
# Push-shaped documents: our field names at any depth, with any JSON value
_PUSHY = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(_FIELDS) | st.text(max_size=5), inner, max_size=6), max_leaves=30)
_PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dumps(doc) -> str:
    try:
        return json.dumps(doc, allow_nan=True)
    except ValueError:  # an integer too long for str(): the text is what a caller could send anyway
        return "9" * 5000


@_PROPS
@given(_PUSHY | _JSON)
def test_any_json_document_is_a_push_or_a_400_never_an_exception(doc):
    svc = WebhookService(store=None, correlation_key="OutboundRef")  # type: ignore[arg-type]
    try:
        push = parse_push(_dumps(doc))
    except WebhookError as err:
        assert err.status in (400, 413) and err.message
        return
    assert 1 <= len(push.phonon_uuid) <= 64
    out = outcome_of(push)
    assert all(isinstance(v, (int, str, bool)) for v in out.values())
    assert all(len(v) <= 64 for v in out.values() if isinstance(v, str))
    ref = svc.correlation_ref(push)
    assert ref is None or (isinstance(ref, str) and len(ref) <= 128)


@_PROPS
@given(st.text() | st.binary().map(lambda b: "Basic " + base64.b64encode(b).decode()) | _SCALARS)
def test_any_authorization_header_is_checked_without_raising(header):
    assert Credentials("phonon", "s3cret").check(header) in (True, False)
