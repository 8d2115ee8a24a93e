"""HTTP client for Phonon's Outbound Create endpoint.

One POST per call to :meth:`PhononClient.post`, no retries (retries belong to the queue, which
resends the same bytes), keep-alive through a ``requests.Session``. ``post`` never raises for
HTTP or network problems: it returns an :class:`ApiAnswer` that says what came back, or what
went wrong and whether the request may nevertheless have reached Phonon.

A client made with ``max_answer_bytes`` (the pull API's: ``PULL_MAX_ANSWER_BYTES``) streams
the answer and stops reading beyond that many bytes: the pull API's answer holds one record per
call asked for, its format is not published, and a huge one must not run the reconciler (512 MB)
out of memory. Such an answer is an :class:`ApiAnswer` with its HTTP status, no ``code`` and an
``error`` saying so (nothing of the body). The Create API's client reads answers whole, as
before: its answer is Phonon's verdict on calls it may already have placed, a request carries
at most a chunk's calls (its answer stays far below any such cap), and refusing to read it
would turn a placed call into an unknown one.

The request body carries the flow's security-id: it is never logged, and nothing taken from it
ends up in an :class:`ApiAnswer`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from .body import redact

__all__ = ["ApiAnswer", "PULL_MAX_ANSWER_BYTES", "PhononClient", "USER_AGENT"]

logger = logging.getLogger(__name__)

USER_AGENT = "phonon-outbound/0.1"
_EXCERPT_CHARS = 300
_MAX_RETRY_AFTER_S = 3600.0
PULL_MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a pull answer of 200 records is well under 1 MB
_READ_CHUNK = 64 * 1024


class _TooLarge(Exception):
    """The answer is longer than the client's ``max_answer_bytes``."""


@dataclass
class ApiAnswer:
    """What one POST produced.

    - ``http_status``: the HTTP status, or ``None`` when no response came back.
    - ``code`` / ``message`` / ``request_id`` / ``call_details``: from the documented JSON body
      (``api-response-code`` etc.); ``code`` is ``None`` when the body is not that JSON.
      ``call_details`` is ``None`` when absent or null, else the list of its dict entries.
    - ``error``: set when there was no usable documented answer — timeout, connection error,
      a body that is not JSON or lacks ``api-response-code``.
    - ``maybe_delivered``: ``False`` only when the request surely never reached the server
      (connection refused, DNS failure, connect timeout). After a read timeout or a dropped
      connection it is ``True``: Phonon may have accepted it, so resend the *same bytes* only.
      ``True`` whenever an HTTP response came back.
    - ``retry_after_s``: the ``Retry-After`` header in seconds, when present.
    - ``body_excerpt``: start of a response body that was not the documented JSON (redacted,
      truncated), for diagnostics.
    """

    http_status: int | None
    code: int | None
    message: str | None
    request_id: str | None
    call_details: list[dict] | None
    error: str | None
    elapsed_s: float
    maybe_delivered: bool = True
    retry_after_s: float | None = None
    body_excerpt: str | None = None
    payload: dict | None = field(default=None, repr=False)  # the documented JSON as parsed (pull API records)

    @property
    def documented(self) -> bool:
        """True when the body was Phonon's documented JSON (it has an ``api-response-code``)."""
        return self.code is not None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s"


def _validate_url(url: str) -> str:
    if not isinstance(url, str):
        raise ValueError("Phonon API URL must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Phonon API URL must be an http(s) URL, got {url!r}")
    return url


def _new_session() -> requests.Session:
    session = requests.Session()
    # max_retries=0: urllib3 retries nothing, a failed POST is reported as it is.
    adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=8)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if not raw:
        return None
    raw = str(raw).strip()
    seconds: float | None = None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


_SECID_IN_BODY = re.compile(rb'"security-id"\s*:\s*"([^"\\]{1,512})"')


def _secret_of(body: bytes) -> str | None:
    """The security-id inside a body (build_body puts it near the start), to scrub it."""
    m = _SECID_IN_BODY.search(body, 0, 2048)
    return m.group(1).decode("utf-8", errors="replace") if m else None


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return redact(text)


def _excerpt(content: bytes, secret: str | None = None) -> str:
    text = content[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    text = _scrub(" ".join(text.split()), secret)
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return text


def _surely_not_sent(exc: BaseException) -> bool:
    """True when the exception proves the request never left (no TCP connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (NewConnectionError, ConnectTimeoutError)):  # NameResolutionError included
            return True
        if isinstance(e, MaxRetryError):
            stack.append(e.reason)
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        stack.append(e.__cause__)
        stack.append(e.__context__)
    return False


def parse_response(status: int, content: bytes, headers: Any, elapsed_s: float,
                   secret: str | None = None) -> ApiAnswer:
    """Turn an HTTP response into an :class:`ApiAnswer` (exposed for tests and tools).

    ``secret``: a string (the security-id) scrubbed from every text taken from the response.
    """
    retry_after = _retry_after(headers)
    if not content or not content.strip():
        return ApiAnswer(status, None, None, None, None, "empty response body",
                         elapsed_s, True, retry_after, "")
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return ApiAnswer(status, None, None, None, None, "response body is not JSON",
                         elapsed_s, True, retry_after, _excerpt(content, secret))
    if not isinstance(data, dict):
        return ApiAnswer(status, None, None, None, None,
                         "response JSON is not an object",
                         elapsed_s, True, retry_after, _excerpt(content, secret))
    code = _as_int(data.get("api-response-code"))
    message = data.get("api-response-message")
    if message is not None and not isinstance(message, str):
        message = str(message)
    if code is None:
        # Some other JSON (a gateway's {"message": "..."}): keep its message for the reason.
        alt = message or data.get("message") or data.get("error") or data.get("Message")
        return ApiAnswer(status, None, _scrub(str(alt), secret) if alt is not None else None, None, None,
                         "response JSON has no api-response-code",
                         elapsed_s, True, retry_after, _excerpt(content, secret))
    request_id = data.get("request-id")
    if request_id is not None:
        request_id = str(request_id) if str(request_id).strip() else None
    details_raw = data.get("call-details")
    call_details = [d for d in details_raw if isinstance(d, dict)] if isinstance(details_raw, list) else None
    return ApiAnswer(status, code, _scrub(message, secret) if message is not None else None, request_id,
                     call_details, None, elapsed_s, True, retry_after, None, data)


class PhononClient:
    """POSTs request bodies to the Create endpoint. Not meant to be shared between threads
    (``requests.Session`` is not guaranteed thread-safe): one client per worker."""

    def __init__(
        self,
        url: str,
        connect_timeout: float = 3.05,
        read_timeout: float = 30.0,
        session: requests.Session | None = None,
        max_answer_bytes: int | None = None,
    ) -> None:
        self.url = _validate_url(url)
        self.max_answer_bytes = max_answer_bytes  # None: read whole (the Create API; see the module's doc)
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self._own_session = session is None
        self.session = session if session is not None else _new_session()

    def post(self, body: bytes) -> ApiAnswer:
        """Send one body. Never raises for HTTP or network problems."""
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError("body must be bytes (build it with api.body.build_body)")
        secret = _secret_of(bytes(body))
        started = time.monotonic()
        try:
            resp = self.session.post(
                self.url,
                data=bytes(body),
                headers={"Content-Type": "application/json"},
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
                stream=self.max_answer_bytes is not None,
            )
            # read inside the try: a broken stream raises here
            content = resp.content if self.max_answer_bytes is None else self._read_capped(resp, self.max_answer_bytes)
        except _TooLarge:
            elapsed = time.monotonic() - started
            logger.debug("Phonon POST answered HTTP %s with more than %d bytes: not read on",
                         resp.status_code, self.max_answer_bytes)
            return ApiAnswer(resp.status_code, None, None, None, None,
                             f"answer larger than {self.max_answer_bytes} bytes: not read", elapsed, True,
                             _retry_after(resp.headers))
        except requests.exceptions.ConnectTimeout:
            return self._failure(started, f"connect timeout after {_fmt_s(self.connect_timeout)}", False)
        except requests.exceptions.ReadTimeout:
            return self._failure(started, f"read timeout after {_fmt_s(self.read_timeout)}", True)
        except requests.exceptions.ConnectionError as exc:
            if _surely_not_sent(exc):
                return self._failure(started, f"connection failed: {self._describe(exc, secret)}", False)
            return self._failure(started, f"connection lost before an answer: {self._describe(exc, secret)}", True)
        except requests.exceptions.RequestException as exc:
            return self._failure(started, f"request failed: {self._describe(exc, secret)}", True)
        elapsed = time.monotonic() - started
        answer = parse_response(resp.status_code, content, resp.headers, elapsed, secret)
        logger.debug(
            "Phonon POST answered HTTP %s code %s request-id %s in %.3f s (body %d bytes)%s",
            answer.http_status, answer.code, answer.request_id, elapsed, len(body),
            f": {answer.error}" if answer.error else "",
        )
        return answer

    @staticmethod
    def _read_capped(resp: requests.Response, limit: int) -> bytes:
        """The streamed body, at most `limit` bytes (_TooLarge beyond; the connection is closed)."""
        try:
            declared = int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            resp.close()
            raise _TooLarge
        parts: list[bytes] = []
        size = 0
        for part in resp.iter_content(_READ_CHUNK):
            size += len(part)
            if size > limit:
                resp.close()
                raise _TooLarge
            parts.append(part)
        return b"".join(parts)

    def _failure(self, started: float, error: str, maybe_delivered: bool) -> ApiAnswer:
        elapsed = time.monotonic() - started
        logger.debug("Phonon POST failed after %.3f s: %s", elapsed, error)
        return ApiAnswer(None, None, None, None, None, error, elapsed, maybe_delivered)

    @staticmethod
    def _describe(exc: BaseException, secret: str | None = None) -> str:
        # Walk to the innermost cause for a short, useful text; never includes the body.
        inner: BaseException = exc
        for _ in range(5):
            nxt: BaseException | None = None
            if isinstance(inner, MaxRetryError) and inner.reason is not None:
                nxt = inner.reason
            elif inner.args and isinstance(inner.args[0], BaseException):
                nxt = inner.args[0]
            if nxt is None:
                break
            inner = nxt
        text = f"{type(inner).__name__}: {inner}"
        return _scrub(text, secret)[:300]

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> PhononClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
