"""The bundled Phonon simulator: a real HTTP server on loopback that behaves like the
Outbound Create API (docs/phonon-api.md), with fault modes, a rate limit, and flow-end webhooks.

Behaviour, in the order a request meets it:

1. Every POST to ``/kairos-apis/outbound/create`` counts in ``requests``. A scripted or random
   fault (:class:`FaultPlan`) is picked, then the optional latency is slept.
2. A body larger than 256 KB (``max_body_bytes``) is "not processed": **HTTP 413** with
   ``{"message": "…not processed"}`` — deliberately *not* the documented JSON, so clients
   fall back to the HTTP status (classify → TOO_LARGE). Phonon's real answer is unknown.
3. Faults that refuse (``http500``, ``gw206``, ``http429``, ``http403``,
   ``invalid_security_id``, ``bad_gateway``) answer without looking at the body.
4. Validation, like Phonon, first failure wins:
   not JSON / not an object / not UTF-8 → HTTP 400 ``400 Invalid Format``;
   ``api-version`` ≠ "1.0" → ``203``; ``security-id``/``flow-id`` missing → ``210``;
   unknown flow → ``301``; wrong security-id → ``202 Invalid Security ID`` **with HTTP 202**
   (the nastiest reading of contradiction 2: only the message tells it from success);
   no calls → ``302``; more than ``max_calls`` (10,000) → ``303``; a call without
   ``client-identifier`` / ``contact-numbers`` / ``keys``, or with a malformed or past-dated
   ``start-time`` → ``210``; a number that is not 10–15 digits after an optional ``+`` →
   ``205``; a number in ``FaultPlan.record_error_numbers`` → ``record_error_code`` (205).
   Refusals carry the documented JSON with HTTP 200 (HTTP 400/500 for codes 400/500).
5. A byte-identical body seen before → ``201 Checksum Repeated`` (HTTP 200). By default only
   *accepted* bodies are remembered (``checksum_scope="accepted"``): the reading the project
   relies on ("a 201 on a retry means the earlier attempt was accepted"). With
   ``checksum_scope="all"`` every body is remembered before validation — the pessimistic
   reading of "Phonon stores requests", to show what that would cost.
6. Rate limit (``rate_per_minute``): accepted call records in the last ``rate_window_s`` (60 s)
   plus this request's must stay ≤ the limit, else **HTTP 429** ``{"message": "Too Many
   Requests"}`` with ``Retry-After``. (A single request bigger than the limit never passes.)
7. Accepted: shape "202" → HTTP 202 ``{"api-response-code":202,"api-response-message":
   "Accepted","request-id":…,"call-details":null}``; shape "200" → HTTP 200 with
   ``call-details`` ``[{client-identifier, phonon-uuid}]``. Fault ``partial209`` accepts the
   calls at even indexes only and answers ``209 Partial Success`` listing them (both shapes).
   Fault ``drop_after_accept`` processes the request normally (accepting it when valid) and
   then closes the connection without answering.
8. With a webhook URL, each accepted call gets one flow-end webhook POST after
   ``webhook_delay_s`` (bounded queue, a few worker threads, retries with backoff, HTTP Basic
   auth when configured, optionally wrapped in ``{"body": …}``), at most
   ``webhook_rate_per_s`` a second when that is set (calls end spread over a campaign).

9. ``drop_webhooks`` loses pushes on purpose (a testing aid: the push Phonon sent and we never
   got): ``N`` (an int) loses the pushes of the first N accepted calls, a ratio in (0, 1) loses
   each call's push with that probability (seeded per call), a set of strings loses the pushes of
   the calls with those client-identifiers or phonon-uuids. Counted as ``webhooks.lost``; such a
   call has ``"push-lost": true`` in :meth:`PhononSimulator.accepted_calls`.

**Pull API v2** (``POST /pull/v2``, ``pull_url``): Phonon's "Status after creation" pull is
documented only as ``{"security-id", "flow-id", "phonon-uuids": [...], "fetch-attempt":
"ALL"|"LAST"}``, at most 200 uuids a request, ``213 No Data Available`` when there is nothing
yet. What the simulator serves, and the project assumes (docs/operating.md):

- the flow's security-id and flow-id are checked as for create (210, 301, ``202 Invalid
  Security ID`` with HTTP 202); a body that is not a JSON object → HTTP 400 ``400``;
- ids: ``phonon-uuids`` and/or ``request-ids`` (the seed's FAQ: "by phonon-uuid or request-id";
  the bulk endpoint's 202 answer gives no uuid, so a request-id is how such calls are asked
  for): lists of strings, at least one id; more than ``max_pull_ids`` (200) in total → HTTP 400
  ``{"api-response-code": 400, "api-response-message": "Max Data List Size Exceeded …"}``;
  ``fetch-attempt`` ``ALL`` (default) or ``LAST`` (only the last attempt in ``callDetails``);
- a call of that flow whose flow has ended (``webhook_delay_s`` after it was accepted, pushed
  or not) is a record shaped like the flow-end push (``phonon-uuid``, ``keys``,
  ``callDetails``, …); answer HTTP 200 ``{"api-response-code": 200, "api-response-message":
  "Success", "data": [record, …]}``; none → HTTP 200 ``{"api-response-code": 213,
  "api-response-message": "No Data Available"}``;
- ``set_pull_faults(["http429", "http500", None, …])`` answers the next pulls with those
  faults (one each, in order); ``pull_without_keys = True`` leaves ``keys`` out of the records
  (the record format is not published: a record may not echo the flow variables).

Pulls do not count in ``requests`` or the accepted calls (those are the create endpoint's);
each is logged without its security-id in :meth:`PhononSimulator.pull_log` and counted in
``stats()["pulls"]``.

Admin endpoints (for another process): ``GET /_sim/stats``, ``GET /_sim/calls``,
``POST /_sim/faults`` (a FaultPlan as JSON; ``{}`` clears), ``POST /_sim/reset`` (forget
counters, checksums, rate window, accepted calls, and the fault plan),
``POST /_sim/flows`` (``{"flow-id", "security-id"}``), ``POST /_sim/config`` (``shape``,
``rate_per_minute``, ``latency_s``, ``webhook_url``, ``webhook_auth``, ``webhook_wrap``,
``webhook_delay_s``, ``drop_webhooks``), ``GET /_sim/pulls`` (the pull log). They are
unauthenticated: keep the simulator on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

from phonon_outbound.api.body import API_VERSION, MAX_BODY_BYTES

__all__ = [
    "CREATE_PATH",
    "PULL_PATH",
    "DEMO_FLOW_ID",
    "DEMO_SECURITY_ID",
    "FAULTS",
    "FaultPlan",
    "PhononSimulator",
    "main",
]

logger = logging.getLogger(__name__)

CREATE_PATH = "/kairos-apis/outbound/create"
PULL_PATH = "/pull/v2"
MAX_PULL_IDS = 200
_MAX_PULL_BODY = 1024 * 1024
_PULL_FAULTS = frozenset({"http500", "http429", "bad_gateway", "http403"})
DEMO_FLOW_ID = "DemoFlw1"
#: The simulator's demo security-id: 64 alphanumerics, public, not a secret.
DEMO_SECURITY_ID = "PhononSimulatorDemoSecurityIdNotASecret" + "0" * 25
assert len(DEMO_SECURITY_ID) == 64 and DEMO_SECURITY_ID.isalnum()

#: Fault names a FaultPlan may use.
FAULTS = frozenset({
    "http500",  # HTTP 500 {"api-response-code":500,"api-response-message":"Failure"}
    "gw206",  # HTTP 200 {"api-response-code":206,"api-response-message":"Failure from Gateway"}
    "http429",  # HTTP 429 {"message":"Too Many Requests"}, Retry-After: 1
    "http403",  # HTTP 403 {"api-response-code":401,"api-response-message":"IP Not Whitelisted"}
    "invalid_security_id",  # HTTP 202 {"api-response-code":202,"api-response-message":"Invalid Security ID"}
    "bad_gateway",  # HTTP 502 with an HTML body (not JSON)
    "slow",  # sleep FaultPlan.slow_s, then answer normally
    "drop_after_accept",  # process (accept) normally, then close the connection without answering
    "partial209",  # accept the calls at even indexes only, answer 209 Partial Success
})
_NO_FAULT = {None, "", "ok", "none"}

_IST = timezone(timedelta(hours=5, minutes=30))
_NUMBER = re.compile(r"\+?\d{10,15}")
_FLOW_ID = re.compile(r"[A-Za-z0-9]{8}")
_MAX_DISCARD = 8 * 1024 * 1024


@dataclass
class FaultPlan:
    """Faults applied per create request. JSON-able (:meth:`to_dict` / :meth:`from_dict`).

    - ``sequence``: scripted faults consumed one per request, in order (``None`` / ``"ok"``
      = answer normally); when exhausted, ``probabilities`` apply.
    - ``probabilities``: fault name → probability per request (sum ≤ 1), drawn from a
      ``random.Random(seed)``, so a seeded plan repeats.
    - ``slow_s``: how long the ``slow`` fault sleeps before answering.
    - ``record_error_numbers``: any body with one of these contact numbers (compared without
      ``+``) is refused with ``record_error_code`` (205 Invalid Contact Number; 402 also fits).
      Always on, not drawn.
    """

    sequence: list[str | None] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    slow_s: float = 1.0
    record_error_numbers: list[str] = field(default_factory=list)
    record_error_code: int = 205

    def __post_init__(self) -> None:
        self.sequence = [None if f in _NO_FAULT else f for f in self.sequence]
        for name in [*(f for f in self.sequence if f is not None), *self.probabilities]:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        total = 0.0
        for name, p in self.probabilities.items():
            if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"probability of {name!r} must be between 0 and 1")
            total += p
        if total > 1 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        if self.slow_s < 0:
            raise ValueError("slow_s must be >= 0")
        self.record_error_numbers = [str(n).lstrip("+") for n in self.record_error_numbers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaultPlan:
        data = data or {}
        if not isinstance(data, dict):
            raise ValueError("a FaultPlan is a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FaultPlan field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class _Reply:
    status: int
    payload: Any  # dict → JSON; str → text/html; None → drop the connection
    headers: dict[str, str] = field(default_factory=dict)


def _documented(status: int, code: int, message: str) -> _Reply:
    return _Reply(status, {"api-response-code": code, "api-response-message": message})


_FAULT_REPLIES = {
    "http500": lambda: _documented(500, 500, "Failure"),
    "gw206": lambda: _documented(200, 206, "Failure from Gateway"),
    "http429": lambda: _Reply(429, {"message": "Too Many Requests"}, {"Retry-After": "1"}),
    "http403": lambda: _documented(403, 401, "IP Not Whitelisted"),
    "invalid_security_id": lambda: _documented(202, 202, "Invalid Security ID"),
    "bad_gateway": lambda: _Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
}


class _Refusal(Exception):
    def __init__(self, code: int, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.reply = _documented(status, code, message)
        self.code = code


def _validate_start_time(value: Any) -> None:
    if not isinstance(value, str):
        raise _Refusal(210, "Invalid Mandatory Parameters")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _Refusal(210, "Invalid Mandatory Parameters") from None
    if when.tzinfo is None:
        raise _Refusal(210, "Invalid Mandatory Parameters")
    today_there: date = datetime.now(when.tzinfo).date()
    if when.date() < today_there:
        raise _Refusal(210, "Invalid Mandatory Parameters")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: PhononSimulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PhononSimulator/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections close after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # headers and body go out as separate writes
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("simulator %s - %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, reply: _Reply) -> None:
        if isinstance(reply.payload, str):
            data = reply.payload.encode("utf-8")
            ctype = "text/html; charset=utf-8"
        else:
            data = json.dumps(reply.payload, ensure_ascii=False).encode("utf-8")
            ctype = "application/json;charset=UTF-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            n = int(raw)
        except ValueError:
            return None
        return n if n >= 0 else None

    def _read_json_admin(self) -> Any:
        n = self._content_length() or 0
        if n > 1024 * 1024:
            raise ValueError("admin body too large")
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else {}

    # -- verbs ------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        sim = self.server.sim
        if path == CREATE_PATH:
            sim._handle_create(self)
            return
        if path == PULL_PATH:
            sim._handle_pull(self)
            return
        if path.startswith("/_sim/"):
            try:
                data = self._read_json_admin()
                reply = sim._admin_post(path, data)
            except (ValueError, TypeError) as exc:
                reply = _Reply(400, {"error": str(exc)})
            self._send(reply)
            return
        self._discard_body()
        self._send(_Reply(404, {"message": "Not Found"}))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        sim = self.server.sim
        if path == "/_sim/stats":
            self._send(_Reply(200, sim.stats()))
        elif path == "/_sim/calls":
            self._send(_Reply(200, {"calls": sim.accepted_calls()}))
        elif path == "/_sim/pulls":
            self._send(_Reply(200, {"pulls": sim.pull_log()}))
        elif path in ("/_sim/health", ""):
            self._send(_Reply(200, {"ok": True, "url": sim.url}))
        elif path in (CREATE_PATH, PULL_PATH):
            self._send(_Reply(405, {"message": "Method Not Allowed"}, {"Allow": "POST"}))
        else:
            self._send(_Reply(404, {"message": "Not Found"}))

    def _discard_body(self) -> None:
        n = self._content_length()
        if n is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            return
        if n > _MAX_DISCARD:
            self.close_connection = True
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                self.close_connection = True
                return
            n -= len(chunk)


class _WebhookPusher:
    """Bounded delivery of flow-end webhooks: one queue, a few threads, retries."""

    def __init__(self, sim: PhononSimulator, threads: int, queue_size: int, retries: int) -> None:
        self.sim = sim
        self.n_threads = max(1, threads)
        self.retries = max(0, retries)
        self.q: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue(maxsize=max(1, queue_size))
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.pending = 0
        self.threads: list[threading.Thread] = []
        self.local = threading.local()
        self.pace_lock = threading.Lock()
        self.next_slot = 0.0

    def start(self) -> None:
        self.stop_event.clear()
        for i in range(self.n_threads):
            t = threading.Thread(target=self._run, name=f"phonon-sim-webhook-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def submit(self, due: float, record: dict[str, Any]) -> bool:
        if self.stop_event.is_set():
            return False
        with self.cond:
            self.pending += 1
        try:
            self.q.put_nowait((due, record))
        except queue.Full:
            self._done()
            return False
        return True

    def _done(self) -> None:
        with self.cond:
            self.pending -= 1
            if self.pending <= 0:
                self.cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> int:
        """Stop the workers; returns the number of webhooks abandoned."""
        self.stop_event.set()
        for _ in self.threads:  # wake idle workers at once
            with contextlib.suppress(queue.Full):
                self.q.put_nowait(None)
        for t in self.threads:
            t.join(timeout)
        self.threads.clear()
        abandoned = 0
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                abandoned += 1
                self._done()
        return abandoned

    def _pace(self) -> bool:
        """At most `webhook_rate_per_s` pushes a second across the workers (None: no cap).
        Phonon pushes a flow end when a call ends, and calls end spread over the campaign,
        not all within a second of the API accepting them. False: stopped while waiting."""
        rate = self.sim.webhook_rate_per_s
        if not rate:
            return True
        with self.pace_lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + 1.0 / rate
        wait = slot - now
        return not (wait > 0 and self.stop_event.wait(wait))

    def _session(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False
            self.local.session = s
        return s

    def _run(self) -> None:
        while not self.stop_event.is_set():
            item = self.q.get()
            if item is None:  # stop sentinel
                break
            due, record = item
            try:
                delay = due - time.monotonic()
                if (delay > 0 and self.stop_event.wait(delay)) or not self._pace():
                    self.sim._webhook_event("abandoned")
                    continue
                self._deliver(record)
            except Exception:  # a worker must not die
                logger.exception("simulator webhook worker error")
                self.sim._webhook_event("failed")
            finally:
                self._done()
        s = getattr(self.local, "session", None)
        if s is not None:
            s.close()

    def _deliver(self, record: dict[str, Any]) -> None:
        url, auth, wrap = self.sim._webhook_target()
        if not url:
            self.sim._webhook_event("skipped")
            return
        payload = self.sim._webhook_payload(record)
        if wrap:
            payload = {"body": payload}
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        backoff = 0.1
        for attempt in range(self.retries + 1):
            self.sim._webhook_event("attempts")
            try:
                resp = self._session().post(
                    url, data=data, auth=auth, timeout=(2.0, 10.0),
                    headers={"Content-Type": "application/json", "User-Agent": "PhononSimulator/1.0"},
                )
                if 200 <= resp.status_code < 300:
                    self.sim._webhook_event("sent")
                    return
                logger.debug("simulator webhook answered HTTP %s", resp.status_code)
            except requests.RequestException as exc:
                logger.debug("simulator webhook failed: %s", type(exc).__name__)
            if attempt < self.retries and self.stop_event.wait(backoff):
                break
            backoff = min(backoff * 2, 2.0)
        self.sim._webhook_event("failed")


class PhononSimulator:
    """A Phonon Outbound Create API on loopback. See the module docstring for behaviour.

    >>> with PhononSimulator() as sim:        # doctest: +SKIP
    ...     PhononClient(sim.url).post(build_body(DEMO_SECURITY_ID, DEMO_FLOW_ID, calls))
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        shape: str = "202",
        flows: dict[str, str] | None = None,
        webhook_url: str | None = None,
        webhook_auth: tuple[str, str] | None = None,
        webhook_delay_s: float = 0.2,
        webhook_rate_per_s: float | None = None,
        webhook_wrap: bool = False,
        faults: FaultPlan | None = None,
        rate_per_minute: int | None = None,
        latency_s: tuple[float, float] = (0.0, 0.0),
        *,
        seed: int | None = None,
        max_calls: int = 10_000,
        max_body_bytes: int = MAX_BODY_BYTES,
        checksum_scope: str = "accepted",
        rate_window_s: float = 60.0,
        default_security_id: str | None = None,
        webhook_outcomes: dict[str, float] | None = None,
        webhook_threads: int = 4,
        webhook_retries: int = 3,
        webhook_queue_size: int = 100_000,
        did_number: str = "918045550100",
        keep_bodies: int = 1000,
        clock: Any = time.time,  # the wall clock of "accepted-at" (tests inject a simulated one)
        drop_webhooks: int | float | Iterable[str] | None = None,
        max_pull_ids: int = MAX_PULL_IDS,
    ) -> None:
        self.clock = clock
        self.drop_webhooks = self._check_drop(drop_webhooks)
        self.max_pull_ids = int(max_pull_ids)
        self.host = host
        self._port = port
        self._check_shape(shape)
        if checksum_scope not in ("accepted", "all"):
            raise ValueError("checksum_scope must be 'accepted' or 'all'")
        self.shape = str(shape)
        self.flows: dict[str, str] = dict(flows) if flows is not None else {DEMO_FLOW_ID: DEMO_SECURITY_ID}
        self.default_security_id = default_security_id
        self.webhook_url = webhook_url
        self.webhook_auth = tuple(webhook_auth) if webhook_auth else None
        self.webhook_delay_s = float(webhook_delay_s)
        self.webhook_rate_per_s = float(webhook_rate_per_s) if webhook_rate_per_s else None
        self.webhook_wrap = bool(webhook_wrap)
        self.rate_per_minute = rate_per_minute
        self.rate_window_s = float(rate_window_s)
        self.latency_s = self._check_latency(latency_s)
        self.seed = seed
        self.max_calls = int(max_calls)
        self.max_body_bytes = int(max_body_bytes)
        self.checksum_scope = checksum_scope
        self.did_number = did_number
        self.keep_bodies = max(0, int(keep_bodies))
        self.webhook_outcomes = dict(webhook_outcomes) if webhook_outcomes else {"NORMAL_CLEARING": 1.0}
        if any(p < 0 for p in self.webhook_outcomes.values()) or sum(self.webhook_outcomes.values()) <= 0:
            raise ValueError("webhook_outcomes must be non-negative weights with a positive sum")

        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._pusher = _WebhookPusher(self, webhook_threads, webhook_queue_size, webhook_retries)
        self._pull_faults: deque[str | None] = deque()
        # the pull API's records without `keys` (its record format is not published: a testing aid)
        self.pull_without_keys = False
        self._reset_state()
        self.set_faults(faults)

    # -- configuration ------------------------------------------------------------------------
    @staticmethod
    def _check_shape(shape: str) -> None:
        if str(shape) not in ("200", "202"):
            raise ValueError("shape must be '202' (bulk endpoint) or '200' (call-details)")

    @staticmethod
    def _check_latency(latency: Any) -> tuple[float, float]:
        lo, hi = (float(x) for x in latency)
        if lo < 0 or hi < lo:
            raise ValueError("latency_s must be (min, max) with 0 <= min <= max")
        return lo, hi

    @staticmethod
    def _check_drop(value: Any) -> int | float | frozenset[str] | None:
        """``drop_webhooks`` as given, checked: None/0 = none, an int N ≥ 1, a ratio in (0, 1),
        or strings (client-identifiers or phonon-uuids)."""
        if value is None or value == 0 or value is False:
            return None
        if isinstance(value, bool):
            raise ValueError("drop_webhooks: a count, a ratio or a set of ids")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("drop_webhooks must be >= 0")
            return value
        if isinstance(value, float):
            if not 0 < value < 1:
                raise ValueError("drop_webhooks as a ratio must be between 0 and 1")
            return value
        if isinstance(value, str):
            raise ValueError("drop_webhooks: give a set of ids, not one string")
        ids = frozenset(str(v) for v in value)
        return ids or None

    def set_drop_webhooks(self, value: int | float | Iterable[str] | None) -> None:
        """Lose pushes on purpose from now on (see the module docstring, 9.); counts restart."""
        checked = self._check_drop(value)
        with self._lock:
            self.drop_webhooks = checked
            self._drops_left = checked if isinstance(checked, int) else 0

    def set_pull_faults(self, sequence: Iterable[str | None]) -> None:
        """The next pulls answer with these faults, one each (None = answer normally)."""
        seq = [None if f in _NO_FAULT else f for f in sequence]
        for f in seq:
            if f is not None and f not in _PULL_FAULTS:
                raise ValueError(f"unknown pull fault {f!r}; known: {', '.join(sorted(_PULL_FAULTS))}")
        with self._lock:
            self._pull_faults = deque(seq)

    def _lose_push(self, record: dict[str, Any]) -> bool:
        """Whether this accepted call's push is lost on purpose (called under the lock)."""
        drop = self.drop_webhooks
        if drop is None:
            return False
        if isinstance(drop, int):
            if self._drops_left > 0:
                self._drops_left -= 1
                return True
            return False
        if isinstance(drop, float):
            return random.Random(f"{self.seed}:drop:{record['phonon-uuid']}").random() < drop
        return str(record["client-identifier"]) in drop or record["phonon-uuid"] in drop

    def set_faults(self, plan: FaultPlan | dict[str, Any] | None) -> None:
        if isinstance(plan, dict):
            plan = FaultPlan.from_dict(plan)
        with self._lock:
            self._faults = plan or FaultPlan()
            self._fault_rng = random.Random(self._faults.seed)
            self._fault_seq = deque(self._faults.sequence)
            self._record_errors = set(self._faults.record_error_numbers)

    def add_flow(self, flow_id: str, security_id: str) -> None:
        with self._lock:
            self.flows[flow_id] = security_id

    def set_webhook(self, url: str | None, auth: tuple[str, str] | None = None, *,
                    wrap: bool | None = None, delay_s: float | None = None) -> None:
        with self._lock:
            self.webhook_url = url
            self.webhook_auth = tuple(auth) if auth else None
            if wrap is not None:
                self.webhook_wrap = bool(wrap)
            if delay_s is not None:
                self.webhook_delay_s = float(delay_s)

    def reset(self) -> None:
        """Forget counters, checksums, the rate window, accepted calls and the fault plan."""
        self._reset_state()
        self.set_faults(None)

    def _reset_state(self) -> None:
        with self._lock:
            self._requests = 0
            self._accepted_requests = 0
            self._calls_accepted = 0
            self._by_cid: Counter[str] = Counter()
            self._checksum_repeats = 0
            self._refusals: Counter[str] = Counter()
            self._rate_refusals = 0
            self._faults_injected: Counter[str] = Counter()
            self._dropped_answers = 0
            self._accepted_log: list[tuple[float, int]] = []
            self._window: deque[tuple[float, int]] = deque()
            self._seen: set[str] = set()
            self._calls: list[dict[str, Any]] = []
            self._bodies: deque[bytes] = deque(maxlen=self.keep_bodies)
            self._webhooks: Counter[str] = Counter()
            self._by_uuid: dict[str, dict[str, Any]] = {}
            self._by_request: dict[str, list[dict[str, Any]]] = {}
            self._ends: dict[str, float] = {}  # phonon-uuid -> when (monotonic) its flow ends
            self._pulls: list[dict[str, Any]] = []
            self._pull_counts: Counter[str] = Counter()
            drop = getattr(self, "drop_webhooks", None)
            self._drops_left = drop if isinstance(drop, int) else 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> PhononSimulator:
        if self._server is not None:
            return self
        self._stop.clear()
        server = _Server((self.host, self._port), _Handler)
        server.sim = self
        self._server = server
        self._port = server.server_address[1]
        self._pusher.start()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="phonon-sim-http", daemon=True
        )
        self._thread.start()
        logger.info("Phonon simulator listening on %s (shape %s)", self.url, self.shape)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        abandoned = self._pusher.stop()
        if abandoned:
            self._webhook_event("abandoned", abandoned)
        self._pusher = _WebhookPusher(self, self._pusher.n_threads, self._pusher.q.maxsize, self._pusher.retries)

    def __enter__(self) -> PhononSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The create endpoint's URL."""
        return self.base_url + CREATE_PATH

    @property
    def pull_url(self) -> str:
        """The pull API's URL (Phonon's is account-specific: the template's PullApiUrl)."""
        return self.base_url + PULL_PATH

    def wait_webhooks_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued webhook is delivered, failed or abandoned."""
        return self._pusher.wait_idle(timeout)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_cid = dict(self._by_cid)
            return {
                "url": self.url,
                "shape": self.shape,
                "requests": self._requests,
                "accepted_requests": self._accepted_requests,
                "calls_accepted": self._calls_accepted,
                "calls_by_client_identifier": by_cid,
                "called_twice": sorted(cid for cid, n in by_cid.items() if n > 1),
                "checksum_repeats": self._checksum_repeats,
                "refusals": dict(self._refusals),
                "rate_refusals": self._rate_refusals,
                "faults_injected": dict(self._faults_injected),
                "dropped_answers": self._dropped_answers,
                "accepted": list(self._accepted_log),
                "pulls": {k: self._pull_counts[k] for k in ("requests", "answered", "no_data", "refused", "records",
                                                             "ids")},
                "webhooks": {
                    "queued": self._webhooks["queued"],
                    "sent": self._webhooks["sent"],
                    "failed": self._webhooks["failed"],
                    "attempts": self._webhooks["attempts"],
                    "dropped": self._webhooks["dropped"],
                    "skipped": self._webhooks["skipped"],
                    "abandoned": self._webhooks["abandoned"],
                    "lost": self._webhooks["lost"],
                    "pending": max(self._pusher.pending, 0),
                },
            }

    def accepted_calls(self) -> list[dict[str, Any]]:
        """Every accepted call: request-id, phonon-uuid, client-identifier, flow-id, numbers, keys."""
        with self._lock:
            return [dict(c) for c in self._calls]

    def pull_log(self) -> list[dict[str, Any]]:
        """Every pull request, oldest first: flow-id, how many phonon-uuids / request-ids it
        asked for, fetch-attempt, the answer's code and how many records it carried. No
        security-id and no id values."""
        with self._lock:
            return [dict(p) for p in self._pulls]

    def accepted_bodies(self) -> list[bytes]:
        """The raw bytes of the last ``keep_bodies`` (1000) accepted requests, oldest first.
        In memory only (they contain security-ids); not served over HTTP."""
        with self._lock:
            return list(self._bodies)

    def _webhook_event(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._webhooks[what] += n

    def _webhook_target(self) -> tuple[str | None, tuple[str, str] | None, bool]:
        with self._lock:
            return self.webhook_url, self.webhook_auth, self.webhook_wrap  # type: ignore[return-value]

    # -- admin ----------------------------------------------------------------------------------
    def _admin_post(self, path: str, data: Any) -> _Reply:
        if path == "/_sim/faults":
            self.set_faults(FaultPlan.from_dict(data))
            return _Reply(200, {"faults": self._faults.to_dict()})
        if path == "/_sim/reset":
            self.reset()
            return _Reply(200, {"ok": True})
        if path == "/_sim/flows":
            if not isinstance(data, dict) or not isinstance(data.get("flow-id"), str) \
                    or not isinstance(data.get("security-id"), str):
                raise ValueError('expected {"flow-id": …, "security-id": …}')
            self.add_flow(data["flow-id"], data["security-id"])
            return _Reply(200, {"flows": sorted(self.flows)})
        if path == "/_sim/config":
            return _Reply(200, self._configure(data))
        return _Reply(404, {"message": "Not Found"})

    def _configure(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        allowed = {"shape", "rate_per_minute", "latency_s", "webhook_url", "webhook_auth",
                   "webhook_wrap", "webhook_delay_s", "drop_webhooks"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        if "drop_webhooks" in data:
            drop = data["drop_webhooks"]
            self.set_drop_webhooks(set(drop) if isinstance(drop, list) else drop)
        with self._lock:
            if "shape" in data:
                self._check_shape(data["shape"])
                self.shape = str(data["shape"])
            if "rate_per_minute" in data:
                r = data["rate_per_minute"]
                if r is not None and (not isinstance(r, int) or r <= 0):
                    raise ValueError("rate_per_minute must be a positive integer or null")
                self.rate_per_minute = r
            if "latency_s" in data:
                self.latency_s = self._check_latency(data["latency_s"])
            if "webhook_url" in data:
                self.webhook_url = data["webhook_url"] or None
            if "webhook_auth" in data:
                auth = data["webhook_auth"]
                self.webhook_auth = (str(auth[0]), str(auth[1])) if auth else None
            if "webhook_wrap" in data:
                self.webhook_wrap = bool(data["webhook_wrap"])
            if "webhook_delay_s" in data:
                self.webhook_delay_s = float(data["webhook_delay_s"])
            return {"shape": self.shape, "rate_per_minute": self.rate_per_minute,
                    "latency_s": list(self.latency_s), "webhook_url": self.webhook_url,
                    "webhook_auth": bool(self.webhook_auth), "webhook_wrap": self.webhook_wrap,
                    "webhook_delay_s": self.webhook_delay_s,
                    "drop_webhooks": sorted(self.drop_webhooks) if isinstance(self.drop_webhooks, frozenset)
                    else self.drop_webhooks}

    # -- the create endpoint --------------------------------------------------------------------
    def _next_fault(self) -> str | None:
        if self._fault_seq:
            return self._fault_seq.popleft()
        probs = self._faults.probabilities
        if not probs:
            return None
        u = self._fault_rng.random()
        acc = 0.0
        for name in sorted(probs):
            acc += probs[name]
            if u < acc:
                return name
        return None

    def _handle_create(self, h: _Handler) -> None:
        with self._lock:
            self._requests += 1
            fault = self._next_fault()
            if fault:
                self._faults_injected[fault] += 1
            lo, hi = self.latency_s
            latency = self._rng.uniform(lo, hi) if hi > 0 else 0.0

        n = h._content_length()
        if n is None:
            if h.headers.get("Transfer-Encoding"):
                h.close_connection = True  # chunked bodies are not supported: refuse and hang up
            self._refuse_counted(h, _documented(400, 400, "Invalid Format"))
            return
        if n > self.max_body_bytes:
            h._discard_body()
            self._refuse_counted(h, _Reply(413, {
                "message": f"Request body larger than {self.max_body_bytes} bytes: not processed"}))
            return
        body = h.rfile.read(n)
        if len(body) < n:
            h.close_connection = True
            return

        if latency > 0:
            self._stop.wait(latency)
        if fault == "slow":
            self._stop.wait(self._faults.slow_s)

        if fault in _FAULT_REPLIES:
            if self.checksum_scope == "all":
                with self._lock:
                    self._seen.add(hashlib.sha256(body).hexdigest())
            self._refuse_counted(h, _FAULT_REPLIES[fault]())
            return

        reply = self._process(body, partial=(fault == "partial209"))
        if fault == "drop_after_accept":
            with self._lock:
                self._dropped_answers += 1
            h.close_connection = True
            return  # no answer at all: the client sees the connection closed
        h._send(reply)

    def _refuse_counted(self, h: _Handler, reply: _Reply) -> None:
        self._count_refusal(reply)
        h._send(reply)

    def _count_refusal(self, reply: _Reply) -> None:
        payload = reply.payload
        key = (str(payload["api-response-code"])
               if isinstance(payload, dict) and "api-response-code" in payload else f"http{reply.status}")
        with self._lock:
            self._refusals[key] += 1

    def _process(self, body: bytes, partial: bool = False) -> _Reply:
        digest = hashlib.sha256(body).hexdigest()
        if self.checksum_scope == "all":
            with self._lock:
                if digest in self._seen:
                    self._checksum_repeats += 1
                    return _documented(200, 201, "Checksum Repeated")
                self._seen.add(digest)
        try:
            flow_id, calls = self._validate(body)
        except _Refusal as refusal:
            self._count_refusal(refusal.reply)
            return refusal.reply

        take = [i for i in range(len(calls)) if not partial or i % 2 == 0]
        now_mono, now_wall = time.monotonic(), self.clock()
        with self._lock:
            if self.checksum_scope == "accepted" and digest in self._seen:
                self._checksum_repeats += 1
                return _documented(200, 201, "Checksum Repeated")
            if self.rate_per_minute is not None:
                while self._window and self._window[0][0] <= now_mono - self.rate_window_s:
                    self._window.popleft()
                used = sum(k for _, k in self._window)
                if used + len(take) > self.rate_per_minute:
                    wait = (self._window[0][0] + self.rate_window_s - now_mono) if self._window else 1.0
                    reply = _Reply(429, {"message": "Too Many Requests"},
                                   {"Retry-After": str(max(1, math.ceil(wait)))})
                    self._refusals["http429"] += 1
                    self._rate_refusals += 1
                    return reply
                self._window.append((now_mono, len(take)))
            self._seen.add(digest)
            if self.keep_bodies:
                self._bodies.append(body)
            request_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            details = []
            webhooks = []
            for i in take:
                call = calls[i]
                phonon_uuid = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
                cid = call["client-identifier"]
                details.append({"client-identifier": cid, "phonon-uuid": phonon_uuid})
                record = {
                    "request-id": request_id,
                    "phonon-uuid": phonon_uuid,
                    "client-identifier": cid,
                    "flow-id": flow_id,
                    "contact-numbers": [str(x) for x in call["contact-numbers"]],
                    "keys": call["keys"],
                    "start-time": call.get("start-time"),
                    "accepted-at": now_wall,
                }
                self._calls.append(record)
                self._by_cid[str(cid)] += 1
                self._by_uuid[phonon_uuid] = record
                self._by_request.setdefault(request_id, []).append(record)
                self._ends[phonon_uuid] = now_mono + self.webhook_delay_s
                if self._lose_push(record):
                    self._webhooks["lost"] += 1
                    record["push-lost"] = True
                else:
                    webhooks.append(record)
            self._accepted_requests += 1
            self._calls_accepted += len(take)
            self._accepted_log.append((now_wall, len(take)))
            send_webhooks = bool(self.webhook_url)
            due = now_mono + self.webhook_delay_s
            shape = self.shape

        if send_webhooks:
            for record in webhooks:
                ok = self._pusher.submit(due, record)
                self._webhook_event("queued" if ok else "dropped")

        if partial:
            return _Reply(200, {"api-response-code": 209, "api-response-message": "Partial Success",
                                "request-id": request_id, "call-details": details})
        if shape == "200":
            return _Reply(200, {"api-response-code": 200, "api-response-message": "Success",
                                "request-id": request_id, "call-details": details})
        return _Reply(202, {"api-response-code": 202, "api-response-message": "Accepted",
                            "request-id": request_id, "call-details": None})

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        """The body as a JSON object (else HTTP 400 ``400 Invalid Format``)."""
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Refusal(400, "Invalid Format", 400) from None
        if not isinstance(data, dict):
            raise _Refusal(400, "Invalid Format", 400)
        return data

    def _validate(self, body: bytes) -> tuple[str, list[dict[str, Any]]]:
        data = self._json_object(body)
        if "api-version" not in data:
            raise _Refusal(210, "Invalid Mandatory Parameters")
        if data["api-version"] != API_VERSION:
            raise _Refusal(203, "API Version not Supported")
        flow_id = self._check_flow(data)
        calls = data.get("calls")
        if calls is None or calls == []:
            raise _Refusal(302, "Empty Call List")
        if not isinstance(calls, list):
            raise _Refusal(400, "Invalid Format", 400)
        if len(calls) > self.max_calls:
            raise _Refusal(303, "Max Data List Size Exceeded")
        for call in calls:
            if not isinstance(call, dict):
                raise _Refusal(400, "Invalid Format", 400)
            cid = call.get("client-identifier")
            numbers = call.get("contact-numbers")
            keys = call.get("keys")
            if cid is None or cid == "" or isinstance(cid, (dict, list)):
                raise _Refusal(210, "Invalid Mandatory Parameters")
            if not isinstance(numbers, list) or not numbers:
                raise _Refusal(210, "Invalid Mandatory Parameters")
            if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
                raise _Refusal(210, "Invalid Mandatory Parameters")
            if "start-time" in call:
                _validate_start_time(call["start-time"])
        record_errors = self._record_errors
        record_code = self._faults.record_error_code
        for call in calls:
            for number in call["contact-numbers"]:
                if isinstance(number, bool) or not isinstance(number, (str, int)):
                    raise _Refusal(205, "Invalid Contact Number")
                text = str(number).strip()
                if not _NUMBER.fullmatch(text):
                    raise _Refusal(205, "Invalid Contact Number")
                if text.lstrip("+") in record_errors:
                    raise _Refusal(record_code, _RECORD_MESSAGES.get(record_code, "Invalid Contact Number"))
        return flow_id, calls

    def _check_flow(self, data: dict[str, Any]) -> str:
        """The body's flow-id once its security-id is that flow's (else the refusal, as create)."""
        security_id, flow_id = data.get("security-id"), data.get("flow-id")
        if not isinstance(security_id, str) or not security_id or not isinstance(flow_id, str) or not flow_id:
            raise _Refusal(210, "Invalid Mandatory Parameters")
        with self._lock:
            expected = self.flows.get(flow_id)
            if expected is None and self.default_security_id and _FLOW_ID.fullmatch(flow_id):
                expected = self.default_security_id
        if expected is None:
            raise _Refusal(301, "Invalid Flow ID")
        if not hmac.compare_digest(security_id.encode("utf-8"), expected.encode("utf-8")):
            raise _Refusal(202, "Invalid Security ID", 202)
        return flow_id

    # -- the pull API -----------------------------------------------------------------------------
    def _handle_pull(self, h: _Handler) -> None:
        with self._lock:
            self._pull_counts["requests"] += 1
            fault = self._pull_faults.popleft() if self._pull_faults else None
        n = h._content_length()
        if n is None or n > _MAX_PULL_BODY:
            h._discard_body()
            self._pull_done({"code": 400}, _documented(400, 400, "Invalid Format"), h)
            return
        body = h.rfile.read(n)
        if len(body) < n:
            h.close_connection = True
            return
        if fault:
            self._pull_done({"fault": fault}, _FAULT_REPLIES[fault](), h)
            return
        entry: dict[str, Any] = {}
        try:
            reply = self._pull(body, entry)
        except _Refusal as refusal:
            reply = refusal.reply
        self._pull_done(entry, reply, h)

    def _pull_done(self, entry: dict[str, Any], reply: _Reply, h: _Handler) -> None:
        payload = reply.payload if isinstance(reply.payload, dict) else {}
        code = payload.get("api-response-code")
        entry = {**entry, "http": reply.status, "code": code, "records": len(payload.get("data") or [])}
        with self._lock:
            self._pulls.append(entry)
            key = "answered" if code == 200 else "no_data" if code == 213 else "refused"
            self._pull_counts[key] += 1
            self._pull_counts["records"] += entry["records"]
            self._pull_counts["ids"] += int(entry.get("ids", 0))
        h._send(reply)

    def _pull(self, body: bytes, entry: dict[str, Any]) -> _Reply:
        data = self._json_object(body)
        flow_id = self._check_flow(data)
        entry["flow-id"] = flow_id
        asked: dict[str, list[str]] = {}
        for name in ("phonon-uuids", "request-ids"):
            ids = data.get(name, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
                raise _Refusal(210, "Invalid Mandatory Parameters")
            asked[name] = ids
            entry[name] = len(ids)
        total = sum(len(v) for v in asked.values())
        entry["ids"] = total
        if total == 0:
            raise _Refusal(210, "Invalid Mandatory Parameters")
        if total > self.max_pull_ids:
            raise _Refusal(400, f"Max Data List Size Exceeded: at most {self.max_pull_ids} ids", 400)
        fetch = data.get("fetch-attempt", "ALL")
        if fetch not in ("ALL", "LAST"):
            raise _Refusal(210, "Invalid Mandatory Parameters")
        entry["fetch-attempt"] = fetch
        now = time.monotonic()
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            candidates = [self._by_uuid.get(u) for u in asked["phonon-uuids"]]
            for rid in asked["request-ids"]:
                candidates.extend(self._by_request.get(rid, ()))
            for rec in candidates:
                if rec is not None and rec["flow-id"] == flow_id and self._ends.get(rec["phonon-uuid"], now) <= now:
                    found.setdefault(rec["phonon-uuid"], rec)
        if not found:
            return _documented(200, 213, "No Data Available")
        records = []
        for rec in found.values():
            payload = self._webhook_payload(rec)
            if fetch == "LAST":
                payload["callDetails"] = payload["callDetails"][-1:]
            if self.pull_without_keys:
                payload.pop("keys", None)
            records.append(payload)
        return _Reply(200, {"api-response-code": 200, "api-response-message": "Success", "data": records})

    # -- webhooks ---------------------------------------------------------------------------------
    def _webhook_payload(self, record: dict[str, Any]) -> dict[str, Any]:
        """A flow-end webhook body for one accepted call, shaped like Phonon's push.

        Times are ISO-8601 with milliseconds in +05:30; ``duration`` is milliseconds as a string
        (as in Phonon's published sample). Outcomes are drawn per call from ``webhook_outcomes``
        with a random seeded by (seed, phonon-uuid): the same call always ends the same way.
        Numbers are tried in order until one answers (``NORMAL_CLEARING``).
        """
        phonon_uuid = record["phonon-uuid"]
        rng = random.Random(f"{self.seed}:{phonon_uuid}")
        outcomes = sorted(self.webhook_outcomes.items())
        total = sum(w for _, w in outcomes)
        plan: list[tuple[str, str, float, float]] = []  # number, cause, ring s, talk s
        for number in record["contact-numbers"]:
            u, acc, cause = rng.random() * total, 0.0, outcomes[-1][0]
            for name, w in outcomes:
                acc += w
                if u < acc:
                    cause = name
                    break
            answered = cause == "NORMAL_CLEARING"
            plan.append((number, cause, rng.uniform(2, 8), rng.uniform(20, 180) if answered else 0.0))
            if answered:
                break
        now = datetime.now(_IST)
        t = now - timedelta(seconds=sum(r + d + 1 for _, _, r, d in plan))
        attempts = []
        for number, cause, ring, talk in plan:
            start = t
            attempt: dict[str, Any] = {
                "cdrId": f"{uuid.UUID(int=rng.getrandbits(128), version=4)}##sim",
                "calleeNumber": number.lstrip("+"),
                "didNumber": self.did_number,
                "startTime": _iso(start),
            }
            if talk > 0:
                connect = start + timedelta(seconds=ring)
                end = connect + timedelta(seconds=talk)
                attempt["connectTime"] = _iso(connect)
            else:
                end = start + timedelta(seconds=ring)
            attempt.update({
                "endTime": _iso(end),
                "duration": str(int(talk * 1000)),
                "hangupCause": cause,
                "incoming": False,
                "dtmfPressesd": [],
                "calleeType": "VISITOR",
                "remoteHangup": True,
            })
            attempts.append(attempt)
            t = end + timedelta(seconds=1)
        return {
            "phonon-uuid": phonon_uuid,
            "callDetails": attempts,
            "keys": record["keys"],
            "recordingUrls": [],
        }


_RECORD_MESSAGES = {205: "Invalid Contact Number", 402: "Phone Not Whitelisted", 210: "Invalid Mandatory Parameters"}


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


# -- command line ---------------------------------------------------------------------------------
def _parse_flow(text: str) -> tuple[str, str]:
    flow_id, sep, security_id = text.partition("=")
    if not sep or not flow_id or not security_id:
        raise argparse.ArgumentTypeError("expected FLOW_ID=SECURITY_ID")
    return flow_id, security_id


def _parse_latency(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("expected SECONDS or MIN,MAX")
    return parts[0], parts[1]


def parse_drop_webhooks(text: str) -> int | float:
    try:
        value: int | float = float(text) if "." in text else int(text)
        PhononSimulator._check_drop(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a count N or a ratio between 0 and 1") from None
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="phonon-outbound simulate",
        description="Run the bundled Phonon Outbound API simulator on this machine until Ctrl-C. "
                    "The first line printed is the create endpoint's URL.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                   "the admin endpoints are unauthenticated, keep it on loopback)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--shape", choices=("202", "200"), default="202",
                   help="success shape: 202 = bulk endpoint, no uuids (default); 200 = call-details")
    p.add_argument("--webhook-url", help="push a flow-end webhook per accepted call to this URL")
    p.add_argument("--webhook-auth", metavar="USER:PASSWORD",
                   help="HTTP Basic credentials for the webhook (or env PHONON_SIM_WEBHOOK_AUTH)")
    p.add_argument("--webhook-delay", type=float, default=0.2, metavar="S", help="delay before a push")
    p.add_argument("--webhook-rate", type=float, default=None, metavar="N", help="at most N pushes a second")
    p.add_argument("--webhook-wrap", action="store_true", help='wrap webhook bodies in {"body": …}')
    p.add_argument("--rate", type=int, metavar="N", help="refuse with HTTP 429 over N call records per minute")
    p.add_argument("--latency", type=_parse_latency, default=(0.0, 0.0), metavar="S|MIN,MAX",
                   help="answer after this many seconds (uniform between MIN and MAX)")
    p.add_argument("--flow", type=_parse_flow, action="append", default=[], metavar="FLOW_ID=SECURITY_ID",
                   help="accept this flow (repeatable); the demo flow is always there")
    p.add_argument("--any-flow", action="store_true",
                   help="accept any 8-character flow-id with the demo security-id")
    p.add_argument("--max-calls", type=int, default=10_000, help="calls per request before 303")
    p.add_argument("--checksum-scope", choices=("accepted", "all"), default="accepted",
                   help="which bodies 201 Checksum Repeated remembers (default: accepted ones)")
    p.add_argument("--faults", metavar="JSON|@FILE", help="a FaultPlan as JSON, or @file holding it")
    p.add_argument("--seed", type=int, help="seed for ids, latency and webhook outcomes")
    p.add_argument("--drop-webhooks", type=parse_drop_webhooks, metavar="N|RATIO",
                   help="testing aid: lose the flow-end pushes of the first N accepted calls (or of a RATIO "
                        "such as 0.1 of them); the pull API (POST /pull/v2) still answers for them")
    return p


def main(argv: list[str] | None = None) -> int:
    """``phonon-outbound simulate``: serve until Ctrl-C (or SIGTERM). Returns an exit status."""
    args = _build_parser().parse_args(argv)
    auth = args.webhook_auth or os.environ.get("PHONON_SIM_WEBHOOK_AUTH")
    webhook_auth = None
    if auth:
        user, sep, password = auth.partition(":")
        if not sep:
            print("error: --webhook-auth must be USER:PASSWORD", file=sys.stderr)
            return 2
        webhook_auth = (user, password)
    faults = None
    if args.faults:
        try:
            raw = args.faults
            if raw.startswith("@"):
                with open(raw[1:], encoding="utf-8") as fh:
                    raw = fh.read()
            faults = FaultPlan.from_dict(json.loads(raw))
        except (OSError, ValueError, TypeError) as exc:
            print(f"error: --faults: {exc}", file=sys.stderr)
            return 2
    flows = {DEMO_FLOW_ID: DEMO_SECURITY_ID, **dict(args.flow)}
    try:
        sim = PhononSimulator(
            host=args.host, port=args.port, shape=args.shape, flows=flows,
            webhook_url=args.webhook_url, webhook_auth=webhook_auth, webhook_delay_s=args.webhook_delay,
            webhook_rate_per_s=args.webhook_rate,
            webhook_wrap=args.webhook_wrap, faults=faults, rate_per_minute=args.rate, latency_s=args.latency,
            seed=args.seed, max_calls=args.max_calls, checksum_scope=args.checksum_scope,
            default_security_id=DEMO_SECURITY_ID if args.any_flow else None,
            drop_webhooks=args.drop_webhooks,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the simulator on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:  # a Ctrl-C from here on stops the simulator cleanly (even while the banner is printed)
        print(sim.url, flush=True)
        print(
            f"Phonon simulator ({args.shape} shape) listening.\n"
            f"  demo flow-id:     {DEMO_FLOW_ID}\n"
            f"  demo security-id: {DEMO_SECURITY_ID}\n"
            f"  other flows:      {', '.join(f for f in flows if f != DEMO_FLOW_ID) or '-'}"
            f"{' (and any 8-character flow-id with the demo security-id)' if args.any_flow else ''}\n"
            f"  webhook:          {args.webhook_url or '-'}"
            f"{f' ({args.drop_webhooks} lost on purpose)' if args.drop_webhooks else ''}\n"
            f"  pull API:         POST {sim.pull_url}\n"
            f"  stats:            GET {sim.base_url}/_sim/stats\n"
            "Ctrl-C to stop.",
            file=sys.stderr, flush=True,
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    s = sim.stats()
    print(f"stopped: {s['requests']} requests, {s['calls_accepted']} calls accepted", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m phonon_outbound_dev.simulator
    sys.exit(main())
