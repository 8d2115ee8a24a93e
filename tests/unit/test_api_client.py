"""PhononClient with a fake requests.Session (the only place where requests is mocked)."""

import http.client
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
)

from phonon_outbound.api.body import build_body
from phonon_outbound.api.client import ApiAnswer, PhononClient, parse_response

URL = "https://central-api.phonon.io/kairos-apis/outbound/create"
SEC = "a0095e7ac42205cb1388d7ac0d2db4afad1b5b2304907a27a6154bf93253088c"
BODY = build_body(SEC, "wruHzoCK", [{"client-identifier": "c1", "contact-numbers": ["916262772728"], "keys": []}])


def _response(status: int, content: bytes | str, headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = content.encode() if isinstance(content, str) else content
    r.headers = CaseInsensitiveDict(headers or {"Content-Type": "application/json"})
    r.url = URL
    return r


class FakeSession:
    """Records what post() was called with; answers with a response or raises."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.calls = []
        self.closed = False

    def post(self, url, **kwargs):
        self.calls.append((url, kwargs))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def close(self):
        self.closed = True


def _client(outcome, **kw) -> tuple[PhononClient, FakeSession]:
    session = FakeSession(outcome)
    return PhononClient(URL, session=session, **kw), session


def test_request_shape_json_content_type_timeouts_no_redirects():
    client, session = _client(_response(202, json.dumps({
        "api-response-code": 202, "api-response-message": "Accepted",
        "request-id": "9ae732e9-aa25-4e19-a66c-dd18bd9a51f7", "call-details": None})))
    client.post(BODY)
    (url, kwargs), = session.calls
    assert url == URL
    assert kwargs["data"] == BODY
    assert kwargs["headers"]["Content-Type"] == "application/json"
    assert kwargs["timeout"] == (3.05, 30.0)
    assert kwargs["allow_redirects"] is False


def test_202_bulk_shape_parsed():
    client, _ = _client(_response(202, json.dumps({
        "api-response-code": 202, "api-response-message": "Accepted",
        "request-id": "9ae732e9-aa25-4e19-a66c-dd18bd9a51f7", "call-details": None})))
    a = client.post(BODY)
    assert (a.http_status, a.code, a.message, a.request_id, a.call_details, a.error) == (
        202, 202, "Accepted", "9ae732e9-aa25-4e19-a66c-dd18bd9a51f7", None, None)
    assert a.documented and a.maybe_delivered and a.elapsed_s >= 0


def test_200_shape_with_call_details():
    client, _ = _client(_response(200, json.dumps({
        "api-response-code": 200, "api-response-message": "Success",
        "request-id": "c46e46f4-dc58-4839-9483-f7dd9aac28a0",
        "call-details": [{"client-identifier": "c1", "phonon-uuid": "501c78ee-8d06-498e-8952-fce3495f326b"},
                         "junk"]})))
    a = client.post(BODY)
    assert a.code == 200 and a.request_id == "c46e46f4-dc58-4839-9483-f7dd9aac28a0"
    assert a.call_details == [{"client-identifier": "c1", "phonon-uuid": "501c78ee-8d06-498e-8952-fce3495f326b"}]


def test_error_body_code_as_string_and_http_200():
    client, _ = _client(_response(200, '{"api-response-code": "401", "api-response-message": "IP Not Whitelisted"}'))
    a = client.post(BODY)
    assert a.http_status == 200 and a.code == 401 and a.message == "IP Not Whitelisted" and a.error is None


@pytest.mark.parametrize("content,error", [
    (b"<html><body>502 Bad Gateway</body></html>", "response body is not JSON"),
    (b"", "empty response body"),
    (b"   ", "empty response body"),
    (b"\xff\xfe\x00garbage", "response body is not JSON"),
    (b"[1, 2]", "response JSON is not an object"),
    (b'{"message": "Too Many Requests"}', "response JSON has no api-response-code"),
])
def test_undocumented_bodies(content, error):
    client, _ = _client(_response(502, content, {"Content-Type": "text/html"}))
    a = client.post(BODY)
    assert a.http_status == 502 and a.code is None and a.error == error
    assert a.maybe_delivered is True


def test_gateway_json_message_kept():
    a = parse_response(429, b'{"message": "Too Many Requests"}', {"Retry-After": "7"}, 0.1)
    assert a.code is None and a.message == "Too Many Requests" and a.retry_after_s == 7.0


def test_retry_after_http_date_and_garbage():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    a = parse_response(429, b"x", {"Retry-After": when}, 0.0)
    assert a.retry_after_s is not None and 20 <= a.retry_after_s <= 31
    assert parse_response(429, b"x", {"Retry-After": "soon"}, 0.0).retry_after_s is None
    assert parse_response(429, b"x", {"Retry-After": "99999999"}, 0.0).retry_after_s == 3600.0


def test_excerpt_is_redacted_and_truncated():
    body = ("<html>" + SEC + "x" + "y" * 2000).encode()
    a = parse_response(500, body, {}, 0.0, secret=SEC)
    assert SEC not in (a.body_excerpt or "") and "[redacted]" in (a.body_excerpt or "")
    assert len(a.body_excerpt or "") <= 301
    # without the secret known, a standalone 64-alphanumeric run is still scrubbed
    assert SEC not in (parse_response(500, f"<p>{SEC}</p>".encode(), {}, 0.0).body_excerpt or "")


def test_response_echoing_the_request_never_leaks_the_security_id():
    # e.g. a proxy that echoes the request into its error page, or a message quoting it
    client, _ = _client(_response(400, b"bad request: " + BODY))
    a = client.post(BODY)
    assert SEC not in repr(a)
    client, _ = _client(_response(200, json.dumps({"api-response-code": 202,
                                                   "api-response-message": f"Invalid Security ID {SEC}x"})))
    a = client.post(BODY)
    assert SEC not in repr(a)


def test_read_timeout_maybe_delivered():
    client, _ = _client(requests.exceptions.ReadTimeout("HTTPSConnectionPool: Read timed out."))
    a = client.post(BODY)
    assert a == ApiAnswer(None, None, None, None, None, "read timeout after 30 s", a.elapsed_s, True)
    assert a.maybe_delivered is True


def test_connect_timeout_not_delivered():
    exc = requests.exceptions.ConnectTimeout(MaxRetryError(None, URL, ConnectTimeoutError("timed out")))
    client, _ = _client(exc, connect_timeout=2)
    a = client.post(BODY)
    assert a.error == "connect timeout after 2 s" and a.maybe_delivered is False and a.http_status is None


def test_connection_refused_not_delivered():
    exc = requests.exceptions.ConnectionError(
        MaxRetryError(None, URL, NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")))
    client, _ = _client(exc)
    a = client.post(BODY)
    assert a.maybe_delivered is False
    assert a.error.startswith("connection failed:") and "refused" in a.error


def test_dns_failure_not_delivered():
    exc = requests.exceptions.ConnectionError(
        MaxRetryError(None, URL, NameResolutionError("central-api.phonon.io", None, "Name or service not known")))
    a = _client(exc)[0].post(BODY)
    assert a.maybe_delivered is False


def test_connection_dropped_after_send_maybe_delivered():
    exc = requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection without response")))
    a = _client(exc)[0].post(BODY)
    assert a.maybe_delivered is True
    assert a.error.startswith("connection lost before an answer") and "RemoteDisconnected" not in (a.message or "")


def test_chunked_encoding_error_maybe_delivered():
    a = _client(requests.exceptions.ChunkedEncodingError("broken"))[0].post(BODY)
    assert a.maybe_delivered is True and a.http_status is None and a.error


def test_post_never_raises_for_other_request_exceptions():
    a = _client(requests.exceptions.SSLError("handshake failure"))[0].post(BODY)
    assert a.error and a.http_status is None


def test_body_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    for outcome in (_response(200, '{"api-response-code":500,"api-response-message":"Failure"}'),
                    requests.exceptions.ReadTimeout("x")):
        _client(outcome)[0].post(BODY)
    text = caplog.text
    assert SEC not in text and "916262772728" not in text


def test_error_text_never_contains_security_id():
    exc = requests.exceptions.ConnectionError(f"weird error echoing {SEC}")
    a = _client(exc)[0].post(BODY)
    assert SEC not in a.error


def test_body_must_be_bytes_and_url_validated():
    client, _ = _client(_response(200, "{}"))
    with pytest.raises(TypeError):
        client.post("{}")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PhononClient("central-api.phonon.io/kairos-apis/outbound/create")
    with pytest.raises(ValueError):
        PhononClient("ftp://x/y")


def test_default_session_keep_alive_no_retries_and_close():
    client = PhononClient(URL)
    assert isinstance(client.session, requests.Session)
    adapter = client.session.get_adapter(URL)
    assert adapter.max_retries.total == 0
    client.close()
    with PhononClient(URL, session=(fake := FakeSession(None))) as c:
        assert c.session is fake
    assert fake.closed is False  # a session the caller passed in is the caller's to close


# ------------------------------------------------------------------ the pull client's answer cap
def _streamed(status: int, content: bytes, headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.raw = io.BytesIO(content)  # read as it streams: _content is not set
    r.headers = CaseInsensitiveDict(headers or {"Content-Type": "application/json"})
    r.url = URL
    return r


def _records(n: int) -> bytes:
    return json.dumps({"api-response-code": 200, "api-response-message": "Success",
                       "data": [{"phonon-uuid": f"u{i}", "keys": [{"name": "x", "value": "y" * 100}]}
                                for i in range(n)]}).encode()


def test_a_capped_client_streams_and_refuses_an_answer_over_its_cap_without_its_body():
    big = _records(200)
    client, session = _client(_streamed(200, big), max_answer_bytes=len(big) - 1)
    answer = client.post(BODY)
    assert session.calls[0][1]["stream"] is True
    assert (answer.http_status, answer.code, answer.payload) == (200, None, None)
    assert answer.error == f"answer larger than {len(big) - 1} bytes: not read"
    assert answer.body_excerpt is None and "u1" not in repr(answer)
    # refused as soon as the declared length says so, too
    client, _ = _client(_streamed(200, big, {"Content-Length": str(len(big))}), max_answer_bytes=1000)
    assert client.post(BODY).error == "answer larger than 1000 bytes: not read"
    # an answer within the cap is read as before
    client, _ = _client(_streamed(200, big), max_answer_bytes=len(big))
    answer = client.post(BODY)
    assert answer.code == 200 and len(answer.payload["data"]) == 200


def test_the_create_client_has_no_cap_and_reads_whole():
    big = _records(2000)
    client, session = _client(_response(200, big))
    answer = client.post(BODY)
    assert client.max_answer_bytes is None and session.calls[0][1]["stream"] is False
    assert answer.code == 200 and len(answer.payload["data"]) == 2000
