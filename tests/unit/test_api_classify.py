"""Every row of docs/phonon-api.md's response table, the two success shapes, the 202 contradiction,
and the HTTP-status fall-backs."""

import json

import pytest

from phonon_outbound.api.classify import CODES, RETRY_SAME_BYTES, SUCCESS, Kind, Verdict, classify
from phonon_outbound.api.client import ApiAnswer, parse_response

SEC = "a0095e7ac42205cb1388d7ac0d2db4afad1b5b2304907a27a6154bf93253088c"
RID = "9ae732e9-aa25-4e19-a66c-dd18bd9a51f7"


def answer(status=200, **body) -> ApiAnswer:
    """An ApiAnswer as the client would build it from a JSON body."""
    return parse_response(status, json.dumps(body).encode(), {}, 0.05)


def doc(code, message, status=200, **extra) -> ApiAnswer:
    return answer(status, **{"api-response-code": code, "api-response-message": message, **extra})


# ---- the table, row by row ---------------------------------------------------------------------
TABLE = [
    (209, "Partial Success", Kind.PARTIAL),
    (201, "Checksum Repeated", Kind.ALREADY_ACCEPTED),
    (500, "Failure", Kind.TRANSIENT),
    (206, "Failure from Gateway", Kind.TRANSIENT),
    (401, "IP Not Whitelisted", Kind.ACCOUNT),
    (211, "Validity Expired", Kind.ACCOUNT),
    (212, "Insufficient Balance", Kind.ACCOUNT),
    (301, "Invalid Flow ID", Kind.FLOW),
    (304, "Invalid Flow Version", Kind.FLOW),
    (203, "API Version not Supported", Kind.PERMANENT),
    (400, "Invalid Format", Kind.RECORD),
    (210, "Invalid Mandatory Parameters", Kind.RECORD),
    (302, "Empty Call List", Kind.PERMANENT),
    (303, "Max Data List Size Exceeded", Kind.TOO_LARGE),
    (205, "Invalid Contact Number", Kind.RECORD),
    (402, "Phone Not Whitelisted", Kind.RECORD),
    (204, "Invalid SMS Gateway", Kind.FLOW),
    (207, "DID Not Mapped", Kind.FLOW),
    (208, "No Mask Available", Kind.FLOW),
    (213, "No Data Available", Kind.PERMANENT),
]


@pytest.mark.parametrize("code,message,kind", TABLE)
@pytest.mark.parametrize("status", [200, 400, 500])
def test_table_rows_by_body_code_whatever_the_http_status(code, message, kind, status):
    v = classify(doc(code, message, status))
    assert v.kind is kind
    assert v.code == code
    assert v.reason.startswith(f"Phonon answered {code} {message} (HTTP {status})")
    assert v.accepted_ids == {}


def test_every_documented_code_is_in_the_table():
    assert set(CODES) | {202} == {c for c, _, _ in TABLE} | {200, 202}


def test_reason_example_from_the_brief():
    v = classify(doc(301, "Invalid Flow ID"))
    assert v.reason.startswith("Phonon answered 301 Invalid Flow ID (HTTP 200)")
    assert v.kind is Kind.FLOW


def test_missing_message_uses_the_documented_one():
    v = classify(answer(200, **{"api-response-code": 304}))
    assert v.kind is Kind.FLOW and "304 Invalid Flow Version" in v.reason


# ---- success shapes ------------------------------------------------------------------------------
def test_bulk_202_shape_is_accepted_without_uuids():
    v = classify(doc(202, "Accepted", 202, **{"request-id": RID, "call-details": None}))
    assert v.kind is Kind.ACCEPTED and v.is_success
    assert v.request_id == RID and v.accepted_ids == {}
    assert "webhook" in v.reason


def test_202_message_accepted_variant():
    v = classify(doc(202, "Message Accepted", 200, **{"request-id": RID}))
    assert v.kind is Kind.ACCEPTED


def test_202_with_call_details_gives_ids():
    v = classify(doc(202, "Accepted", 202, **{"request-id": RID,
                                               "call-details": [{"client-identifier": "c1", "phonon-uuid": "u1"}]}))
    assert v.kind is Kind.ACCEPTED and v.accepted_ids == {"c1": "u1"}


def test_200_shape_with_call_details():
    v = classify(doc(200, "Success", 200, **{
        "request-id": "c46e46f4-dc58-4839-9483-f7dd9aac28a0",
        "call-details": [{"client-identifier": "AcmeBankCampaign_001", "phonon-uuid": "501c78ee-8d06"},
                         {"client-identifier": 42, "phonon-uuid": "u-42"},
                         {"client-identifier": "no-uuid"},
                         {"phonon-uuid": "no-client-id"}]}))
    assert v.kind is Kind.ACCEPTED
    assert v.accepted_ids == {"AcmeBankCampaign_001": "501c78ee-8d06", "42": "u-42"}
    assert v.request_id == "c46e46f4-dc58-4839-9483-f7dd9aac28a0"
    assert "Phonon answered 200 Success (HTTP 200)" in v.reason


def test_200_without_call_details_but_with_request_id_is_accepted():
    v = classify(doc(200, "Success", 200, **{"request-id": RID}))
    assert v.kind is Kind.ACCEPTED and v.accepted_ids == {}


def test_200_without_call_details_or_request_id_is_unknown():
    v = classify(doc(200, "Success"))
    assert v.kind is Kind.UNKNOWN and not v.is_success


def test_200_with_a_failure_message_is_unknown():
    v = classify(doc(200, "Failure", **{"request-id": RID, "call-details": []}))
    assert v.kind is Kind.UNKNOWN


def test_209_partial_lists_accepted_calls():
    v = classify(doc(209, "Partial Success", 200, **{"request-id": RID, "call-details": [
        {"client-identifier": "c1", "phonon-uuid": "u1"}, {"client-identifier": "c3", "phonon-uuid": "u3"}]}))
    assert v.kind is Kind.PARTIAL and v.accepted_ids == {"c1": "u1", "c3": "u3"}
    assert not v.is_success and "2 listed" in v.reason


# ---- the 202 contradiction -------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 202])
def test_202_invalid_security_id_is_account_level(status):
    v = classify(doc(202, "Invalid Security ID", status))
    assert v.kind is Kind.ACCOUNT and "security-id" in v.reason


def test_202_invalid_security_id_even_with_a_request_id():
    v = classify(doc(202, "Invalid Security ID", 202, **{"request-id": RID}))
    assert v.kind is Kind.ACCOUNT


def test_202_accepted_without_request_id_is_unknown():
    v = classify(doc(202, "Accepted", 202, **{"call-details": None}))
    assert v.kind is Kind.UNKNOWN and "request-id" in v.reason and not v.is_success


@pytest.mark.parametrize("message", ["", "Queued", "Not Accepted", "Accepted with errors", "OK"])
def test_202_with_any_other_message_is_unknown(message):
    v = classify(doc(202, message, 202, **{"request-id": RID}))
    assert v.kind is Kind.UNKNOWN


# ---- 201 ----------------------------------------------------------------------------------------------
def test_201_on_retry_and_on_first_attempt():
    retry = classify(doc(201, "Checksum Repeated"), on_retry=True)
    first = classify(doc(201, "Checksum Repeated"), on_retry=False)
    assert retry.kind is first.kind is Kind.ALREADY_ACCEPTED
    assert "resend" in retry.reason and "first attempt" in first.reason
    assert retry.is_success


# ---- rate limits and HTTP-status fall-backs --------------------------------------------------------
def test_http_429_gateway_body():
    a = parse_response(429, b'{"message":"Too Many Requests"}', {"Retry-After": "3"}, 0.0)
    v = classify(a)
    assert v.kind is Kind.RATE_LIMITED and v.retry_after_s == 3.0 and "Too Many Requests" in v.reason


def test_http_429_non_json():
    assert classify(parse_response(429, b"slow down", {}, 0.0)).kind is Kind.RATE_LIMITED


def test_rate_limit_message_in_documented_body():
    assert classify(doc(500, "Rate limit exceeded")).kind is Kind.RATE_LIMITED
    assert classify(doc(999, "Too many requests, throttled")).kind is Kind.RATE_LIMITED
    assert classify(doc(429, "")).kind is Kind.RATE_LIMITED
    # failure code + HTTP 429 → rate limited; but a configuration code is not masked by it
    assert classify(doc(500, "Failure", 429)).kind is Kind.RATE_LIMITED
    assert classify(doc(301, "Invalid Flow ID", 429)).kind is Kind.FLOW


def test_http_403_bulk_ip_not_whitelisted():
    v = classify(parse_response(403, b"<html>Forbidden</html>", {}, 0.0))
    assert v.kind is Kind.ACCOUNT and "whitelist" in v.reason
    assert classify(parse_response(403, b'{"message":"Forbidden"}', {}, 0.0)).kind is Kind.ACCOUNT
    # documented body on HTTP 403 decides too
    assert classify(doc(401, "IP Not Whitelisted", 403)).kind is Kind.ACCOUNT


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_http_5xx_non_json_is_transient(status):
    v = classify(parse_response(status, b"<html>Bad Gateway</html>", {}, 0.0))
    assert v.kind is Kind.TRANSIENT and f"HTTP {status}" in v.reason and v.kind in RETRY_SAME_BYTES


@pytest.mark.parametrize("content", [b"", b"<html>ok</html>", b"[]", b'{"status":"ok"}'])
def test_http_2xx_undocumented_is_transient(content):
    assert classify(parse_response(200, content, {}, 0.0)).kind is Kind.TRANSIENT


def test_http_413_is_too_large():
    v = classify(parse_response(413, b'{"message":"Request body larger than 262144 bytes: not processed"}', {}, 0.0))
    assert v.kind is Kind.TOO_LARGE


@pytest.mark.parametrize("status", [301, 302, 400, 404, 405])
def test_other_http_statuses_without_documented_body_are_unknown(status):
    v = classify(parse_response(status, b"<html>nope</html>", {}, 0.0))
    assert v.kind is Kind.UNKNOWN and "URL" in v.reason


def test_undocumented_code_is_unknown_never_success():
    v = classify(doc(777, "Something new"))
    assert v.kind is Kind.UNKNOWN and not v.is_success and "777" in v.reason


# ---- no answer ----------------------------------------------------------------------------------------
def test_read_timeout_is_transient_and_maybe_delivered():
    a = ApiAnswer(None, None, None, None, None, "read timeout after 30 s", 30.0, maybe_delivered=True)
    v = classify(a)
    assert v.kind is Kind.TRANSIENT and v.maybe_delivered
    assert "read timeout after 30 s" in v.reason and "may have been accepted" in v.reason


def test_connection_refused_is_transient_not_delivered():
    a = ApiAnswer(None, None, None, None, None, "connection failed: NewConnectionError: refused", 0.01,
                  maybe_delivered=False)
    v = classify(a)
    assert v.kind is Kind.TRANSIENT and not v.maybe_delivered and "not sent" in v.reason


# ---- hygiene --------------------------------------------------------------------------------------
def test_reasons_never_contain_a_security_id():
    cases = [
        doc(202, f"Invalid Security ID {SEC}"),
        doc(500, f"Failure for {SEC}"),
        parse_response(502, f"<html>{SEC}</html>".encode(), {}, 0.0),
        ApiAnswer(None, None, None, None, None, f"boom {SEC}", 0.0),
    ]
    for a in cases:
        assert SEC not in classify(a).reason


def test_verdict_shape():
    v = classify(doc(205, "Invalid Contact Number"))
    assert isinstance(v, Verdict)
    assert (v.kind, v.code, v.accepted_ids, v.request_id) == (Kind.RECORD, 205, {}, None)
    assert str(Kind.RECORD) == "RECORD"
    assert {Kind.ACCEPTED, Kind.ALREADY_ACCEPTED} == SUCCESS
