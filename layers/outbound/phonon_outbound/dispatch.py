"""Dispatch: one chunk message → (dedupe, rate limit) → one API request → every row's outcome.

Never a second call for the same customer:
- the chunk ledger (`Store.claim_chunk`) lets one dispatcher at a time hold a chunk and drops
  redeliveries of a settled chunk;
- the request body is a pure function of the message (and the flow's security-id), so every
  resend is byte-identical and Phonon's checksum check answers 201 instead of calling again;
  a 201 on our resend therefore means "accepted earlier" and is recorded as such;
- dedupe claims (`Store.claim_dedupe`) stop the same call arriving again from another file.

Waiting never kills a message: rate-limit waits, an open circuit breaker and too little time
left in the invocation re-queue a copy of the message with a delay (a fresh receive count)
instead of failing it. Only answers that may succeed later (5xx, 206, timeouts, unknown
answers) are retried through the visibility timeout with exponential backoff.

Every chunk ends with every row's outcome, whatever goes wrong (docs/design.md, "Every row
ends with a status"):
- any exception on the last receive (`max_receive_count`) — an answer that stayed transient,
  DynamoDB throttling, a dedupe lock that stayed busy — records the rows not yet decided as
  FAILED with the reason, settles the chunk (so the job's report is written) and sends the
  message to the DLQ for an operator's redrive;
- a message that cannot be read but names its job, chunk and rows settles those rows FAILED;
  one that does not even say that goes to the DLQ (nothing to attach a reason to);
- a cancelled job (`cancelled_reason` on its item, e.g. its file was deleted) sends nothing
  more: its unsent rows end CANCELLED with that reason;
- a body over Phonon's 256 KB ceiling is never sent (Phonon would silently drop it): its rows
  end FAILED with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from . import suppression
from .api.body import MAX_BODY_BYTES, build_body, redact
from .api.classify import Kind, Verdict, classify
from .api.client import PhononClient
from .flows import FlowSecrets, UnknownFlow
from .jobs import JobFinisher
from .limiter import CircuitBreaker, RateLimiter
from .observability import count, logger
from .records import ChunkMessage, ChunkRef, PoisonMessage
from .settings import Settings
from .status import Status
from .store import Store, decode_outcomes

LOCK_BUSY_DELAY_S = 5.0
# How long a chunk waits when one of its calls is claimed by another file's row whose outcome
# is not known yet (accepted: this one is a duplicate; failed: this one is sent).
DEDUPE_PENDING_DELAY_S = 5.0
# Seconds kept free after a request's longest possible wait (connect + read timeout) for
# recording its answer (outcomes, counts, maybe the job's report). A request is started only
# when the invocation has that much time left; otherwise the chunk is handed back unsent.
SEND_MARGIN_S = 5.0
OUT_OF_TIME_DELAY_S = 1.0
# Kept off the longest rate-limit sleep so that waking up (and re-reading the job) still
# leaves `request_time_s`: a slot the limiter granted is not given up for want of time.
WAKE_SLACK_S = 1.0
MAX_REASON_CHARS = 300


class RetryLater(Exception):
    """Give the message back through its visibility timeout (counts as an attempt)."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


class Exhausted(RetryLater):
    """The last attempt failed: rows are FAILED and recorded; SQS moves the message to the DLQ."""


@dataclass
class Outcome:
    """What happened to one chunk in this invocation."""

    status: str  # settled | waiting | duplicate-delivery | exhausted
    accepted: int = 0
    failed: int = 0
    duplicate: int = 0
    cancelled: int = 0
    requests: int = 0  # requests Phonon answered (any HTTP response)
    attempts: int = 0  # requests started, answered or not
    reason: str = ""
    rows: dict[int, dict] = field(default_factory=dict)
    claims: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> dedupe (hash, owner)
    claimed: bool = False  # this invocation holds the chunk's lease

    def add(self, row: int, item: dict) -> None:
        """Record a row's outcome (once: a row already decided keeps its outcome)."""
        if row in self.rows:
            return
        self.rows[row] = item
        attr = {Status.ACCEPTED: "accepted", Status.FAILED: "failed", Status.DUPLICATE: "duplicate",
                Status.CANCELLED: "cancelled"}.get(item["status"])
        if attr:
            setattr(self, attr, getattr(self, attr) + 1)


def dedupe_hash(flow: str, call: dict, correlation_name: str) -> str:
    """Same flow, client-identifier, numbers, start-time and keys (without our own
    correlation key, which differs per file) → same hash."""
    keys = [k for k in call.get("keys", []) if not isinstance(k, dict) or k.get("name") != correlation_name]
    ident = {"flow": flow, "cid": call.get("client-identifier"), "numbers": call.get("contact-numbers"),
             "start": call.get("start-time"), "keys": keys}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter' (half fixed, half random)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


_LONG_DIGITS = re.compile(r"\d{7,}")


def safe_reason(text: str) -> str:
    """An error's text fit for a report reason: one line, bounded, and any run of 7+ digits (a
    phone number could hide in a library's message) masked to its last 3 digits. A regex, not
    a masking library: the text is ours or a library's message, not a structured record."""
    text = _LONG_DIGITS.sub(lambda m: "•" * (len(m.group()) - 3) + m.group()[-3:], redact(" ".join(str(text).split())))
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "…"


def describe_error(err: BaseException) -> str:
    if isinstance(err, RetryLater):
        return safe_reason(err.reason)
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return safe_reason(f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": "))
    text = str(err)
    return safe_reason(f"{type(err).__name__}: {text}" if text else type(err).__name__)


class DispatchService:
    def __init__(self, settings: Settings, store: Store, client: Callable[[], PhononClient], secrets: FlowSecrets,
                 finisher: JobFinisher, requeue: Callable[[str, float], None],
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 send_margin_s: float = SEND_MARGIN_S):
        self.s = settings
        self.store = store
        self._client_factory = client  # PhononClient is not thread-safe: one per worker thread
        self._local = threading.local()
        self.secrets = secrets
        self.finisher = finisher
        self.requeue = requeue
        self.clock = clock
        self.sleep = sleep
        self.send_margin_s = send_margin_s
        self.records_limiter = RateLimiter.for_records(store, settings.records_per_minute, settings.batch_size,
                                                       settings.rate_jitter_allowance_s, clock)
        self.requests_limiter = (RateLimiter.for_requests(store, settings.requests_per_minute,
                                                          settings.rate_jitter_allowance_s, clock)
                                 if settings.requests_per_minute else None)
        self._job_keys: dict[str, str] = {}

    @property
    def correlation_name(self) -> str:
        return f"$flow.key.{self.s.correlation_key}"

    @property
    def client(self) -> PhononClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client_factory()
        return client

    @property
    def request_time_s(self) -> float:
        """The longest one request can take (the client's connect + read timeouts) plus the
        margin for recording its answer: the least time left in which a request is started."""
        return self.s.api_connect_timeout_s + self.s.api_read_timeout_s + self.send_margin_s

    # ------------------------------------------------------------------ entry points
    def handle(self, body: str, receive_count: int, remaining_s: Callable[[], float]) -> Outcome:
        try:
            try:
                msg = ChunkMessage.model_validate_json(body)
            except ValidationError as err:
                raise PoisonMessage(f"not a chunk message: {err.error_count()} validation errors") from None
            calls = msg.complete_calls(self.correlation_name)
        except PoisonMessage as err:
            return self._poison(body, str(err))

        out = Outcome("settled")
        try:
            return self._handle(msg, calls, body, receive_count, remaining_s, out)
        except Exhausted:
            raise
        except Exception as err:
            if receive_count < self.s.max_receive_count:
                if out.claimed:  # give the lease back: the retry need not wait for it to run out
                    try:
                        self.store.release_chunk(msg.job, msg.chunk)
                    except Exception:
                        logger.warning("chunk lease not given back", extra={"job": msg.job, "chunk": msg.chunk})
                raise
            return self._settle_after_error(msg, calls, out, receive_count, err)

    def abandon(self, body: str, status: Status | str, reason: str) -> int:
        """End a chunk message's rows without sending anything: every row not yet settled gets
        `status` (e.g. CANCELLED, FAILED) with `reason` and its client-identifier, and the chunk
        is settled and counted, so the job's report can be written. Returns the number of rows
        written: 0 when the message does not name its job, chunk and rows, when its job is
        unknown, or when the chunk was sent and settled already (its outcome stands)."""
        ref = ChunkRef.parse(body, self.correlation_name)
        if ref is None or self.store.get_job(ref.job) is None:
            return 0
        return self._end_unsent(ref, Status(status), safe_reason(reason))

    # ------------------------------------------------------------------ the work
    def _handle(self, msg: ChunkMessage, calls: list[dict], body: str, receive_count: int,
                remaining_s: Callable[[], float], out: Outcome) -> Outcome:
        if receive_count > self.s.max_receive_count:
            # Settled FAILED on its last attempt already; SQS has not moved it to the DLQ yet
            # (its maxReceiveCount is higher than ours): do not send again, let it go there.
            raise Exhausted(0, f"retries exhausted ({receive_count - 1} attempts)")

        cancelled = self.store.cancelled_reason(msg.job)
        breaker = CircuitBreaker(self.store, msg.flow, self.s.breaker_open_s, self.clock)
        probe = False
        if not cancelled:  # a cancelled chunk is settled at once, whatever the flow's breaker says
            state = breaker.check()
            if not state.allow:
                self.requeue(body, state.wait_s)
                return Outcome("waiting", reason=f"flow {msg.flow} paused: {state.reason}")
            probe = state.probe

        claim = self.store.claim_chunk(msg.job, msg.chunk, self.s.chunk_lease_s, self.clock())
        if claim.state == "done":
            logger.info("chunk already settled: redelivery dropped", extra={"job": msg.job, "chunk": msg.chunk})
            # An earlier attempt may have died after settling: counting is idempotent, and so
            # is the report (written once, by whoever completes the count).
            _, meta = self.store.count_settled(msg.job, msg.chunk)
            if not meta.get("completed"):
                self.finisher.maybe_finalize(msg.job, meta)
            return Outcome("duplicate-delivery")
        if claim.state == "busy":
            self.requeue(body, claim.lease_left_s + 1)
            return Outcome("waiting", reason="another dispatcher holds this chunk")

        out.claimed = True
        ref = ChunkRef(msg.job, msg.chunk, msg.flow, list(msg.rows), calls)
        if cancelled:
            return self._cancel(ref, out, cancelled)
        try:
            self._dispatch(msg, calls, receive_count, remaining_s, breaker, probe, out)
        except _Cancelled as c:
            return self._cancel(ref, out, c.reason)
        except Exhausted:
            raise
        except RetryLater:
            if receive_count >= self.s.max_receive_count:
                # The last receive: keep the lease until its rows are settled (`handle`), so no
                # other copy of the message starts sending them meanwhile.
                raise
            if not self.store.note_chunk(msg.job, msg.chunk, state="RETRY", lease_until=0):
                return self._settled_meanwhile(msg)
            raise
        except _HandBack as hb:
            if not self.store.note_chunk(msg.job, msg.chunk, state="WAITING", lease_until=0):
                return self._settled_meanwhile(msg)
            self.requeue(body, hb.delay_s)
            return Outcome("waiting", reason=hb.reason)
        self._record(ref, out)
        if out.status == "exhausted":
            raise Exhausted(0, out.reason)  # to the DLQ: this was the last receive
        return out

    def _settled_meanwhile(self, msg: ChunkMessage) -> Outcome:
        """This invocation was to hand its chunk back, but the chunk was settled meanwhile (by
        another copy of the message, an abandoned run): its outcome stands, this copy ends."""
        logger.warning("chunk settled meanwhile: not handed back", extra={"job": msg.job, "chunk": msg.chunk})
        return Outcome("duplicate-delivery")

    def _dispatch(self, msg: ChunkMessage, calls: list[dict], receive_count: int, remaining_s: Callable[[], float],
                  breaker: CircuitBreaker, probe: bool, out: Outcome) -> None:
        rows = list(msg.rows)

        # Dedupe across files, decided once per chunk and identically on every retry.
        if self.s.dedupe_window_hours > 0:
            for row, call in zip(rows, calls, strict=True):
                out.claims[row] = (dedupe_hash(msg.flow, call, self.correlation_name), f"{msg.job}.{row}")
            try:
                conflicts = self.store.claim_dedupe(msg.flow, list(out.claims.values()),
                                                    self.s.dedupe_window_hours * 3600, self.clock())
            except TimeoutError as err:  # the flow's dedupe lock stayed busy; nothing was sent
                raise _HandBack(LOCK_BUSY_DELAY_S, str(err)) from None
            if conflicts and self._any_unsettled(conflicts.values()):
                # The same call is claimed by a row whose outcome is not known yet (its chunk is
                # being sent or retried): it is no duplicate of an accepted call yet. Wait for
                # that outcome (a FAILED row gives its claim back) instead of guessing.
                raise _HandBack(DEDUPE_PENDING_DELAY_S, "waiting for the outcome of the same call from another file")
            if conflicts:
                keep_calls, keep_rows = [], []
                for row, call in zip(rows, calls, strict=True):
                    other = conflicts.get(out.claims[row][0])
                    if other is None:
                        keep_calls.append(call)
                        keep_rows.append(row)
                    else:
                        out.add(row, self._row(call, Status.DUPLICATE, reason=self._duplicate_reason(other)))
                calls, rows = keep_calls, keep_rows

        if calls:
            try:
                security_id = self.secrets.security_id(msg.flow)
            except UnknownFlow as err:
                for row, call in zip(rows, calls, strict=True):
                    out.add(row, self._row(call, Status.FAILED, reason=err.reason))
            else:
                self._send(msg, calls, rows, security_id, receive_count, remaining_s, breaker, probe, out, top=True)

    def _out_of_time(self, out: Outcome, left: float) -> None:
        reason = (f"not sent: {left:.1f} s left in this invocation, and a request may take "
                  f"{self.request_time_s:.1f} s (connect + read timeout + margin)")
        if not out.attempts:
            raise _HandBack(OUT_OF_TIME_DELAY_S, reason)
        raise RetryLater(OUT_OF_TIME_DELAY_S, reason)  # part of a split chunk went already: resend it all

    def _send(self, msg: ChunkMessage, calls: list[dict], rows: list[int], security_id: str, receive_count: int,
              remaining_s: Callable[[], float], breaker: CircuitBreaker, probe: bool, out: Outcome, top: bool) -> None:
        body = build_body(security_id, msg.flow, calls)
        if len(body) > MAX_BODY_BYTES:
            # Chunks are sized for a 64-character security-id; whatever made this one bigger, a
            # body over 256 KB is silently not processed by Phonon: never send it.
            reason = (f"not sent: the request body would be {len(body):,} bytes, over Phonon's limit of "
                      f"{MAX_BODY_BYTES:,} bytes (256 KB), which it silently does not process")
            for row, call in zip(rows, calls, strict=True):
                out.add(row, self._row(call, Status.FAILED, reason=reason))
            count("BodiesTooLarge", 1)
            return

        left = remaining_s()
        if left < self.request_time_s:
            self._out_of_time(out, left)
        max_wait = max(0.0, min(self.s.dispatch_max_wait_s, left - self.request_time_s - WAKE_SLACK_S))
        granted, wait = self._reserve(len(calls), max_wait)
        if not granted:  # `wait`: when to come back
            if top and not out.attempts:
                raise _HandBack(wait, "waiting for the rate limit")
            raise RetryLater(wait, "waiting for the rate limit while splitting a chunk")
        if wait > 0:
            self.sleep(wait)
            reason = self.store.cancelled_reason(msg.job)  # it may have been cancelled meanwhile
            if reason:
                raise _Cancelled(reason)
            left = remaining_s()
            if left < self.request_time_s:
                self._out_of_time(out, left)

        calls, rows, body = suppression.before_send(  # the list once more, after any wait (docs/suppression.md)
            self.s, msg.job, msg.flow, rows, calls, body,
            lambda row, call, why: out.add(row, self._row(call, Status.SUPPRESSED, reason=why)),
            lambda kept: build_body(security_id, msg.flow, kept))
        if not calls:
            return
        answer = self.client.post(body)
        out.attempts += 1
        answered = answer.http_status is not None
        if answered:
            out.requests += 1
        verdict = classify(answer, on_retry=receive_count > 1)
        # Phonon's (or a gateway's) message may name a number: mask it before the reason goes
        # into a row, a log line or a retry (the security-id is redacted by `classify` already).
        verdict = replace(verdict, reason=safe_reason(verdict.reason))
        count(f"Api{verdict.kind.name.title().replace('_', '')}")
        closes = probe and verdict.kind is not Kind.ACCOUNT
        # The answer's rows are decided before anything more is written: a write failing now
        # (DynamoDB throttling) cannot lose an answer Phonon gave. On the last receive the
        # decided rows keep their outcome (and their dedupe claims); before it, the identical
        # resend is answered 201.
        try:
            self._decide(msg, calls, rows, security_id, receive_count, remaining_s, breaker, probe and not closes,
                         out, top, verdict)
        finally:
            self.store.add_to_job(msg.job, api_attempts=1, **({"api_requests": 1} if answered else {}))
            if closes:
                breaker.close()

    def _decide(self, msg: ChunkMessage, calls: list[dict], rows: list[int], security_id: str, receive_count: int,
                remaining_s: Callable[[], float], breaker: CircuitBreaker, probe: bool, out: Outcome, top: bool,
                verdict: Verdict) -> None:
        """Record what Phonon's answer means for these rows (or split, retry, hand back)."""
        kind = verdict.kind
        if kind is Kind.ACCEPTED or kind is Kind.ALREADY_ACCEPTED:
            note = "" if kind is Kind.ACCEPTED else (
                "accepted by an earlier attempt: Phonon answered 201 Checksum Repeated to the identical resend")
            for row, call in zip(rows, calls, strict=True):
                uuid = verdict.accepted_ids.get(str(call.get("client-identifier", "")), "")
                reason = "; ".join(x for x in (msg.warn.get(str(row), ""), note) if x)
                out.add(row, self._row(call, Status.ACCEPTED, request_id=verdict.request_id, uuid=uuid, reason=reason))
        elif kind is Kind.PARTIAL:
            for row, call in zip(rows, calls, strict=True):
                issued = verdict.accepted_ids.get(str(call.get("client-identifier", "")))
                if issued:
                    out.add(row, self._row(call, Status.ACCEPTED, request_id=verdict.request_id, uuid=issued,
                                           reason=msg.warn.get(str(row), "")))
                else:
                    out.add(row, self._row(call, Status.FAILED, request_id=verdict.request_id,
                                           reason=f"{verdict.reason}; this call was not among the accepted ones"))
        elif kind in (Kind.RECORD, Kind.TOO_LARGE) and len(calls) > 1:
            # Find the offending calls by bisection; every sub-body is deterministic too.
            half = len(calls) // 2
            for part_calls, part_rows in ((calls[:half], rows[:half]), (calls[half:], rows[half:])):
                self._send(msg, part_calls, part_rows, security_id, receive_count, remaining_s, breaker, probe,
                           out, top=False)
        elif kind in (Kind.RECORD, Kind.TOO_LARGE, Kind.FLOW, Kind.PERMANENT):
            for row, call in zip(rows, calls, strict=True):
                out.add(row, self._row(call, Status.FAILED, reason=verdict.reason))
        elif kind is Kind.ACCOUNT:
            breaker.trip(verdict.reason, verdict.code)
            count("AccountRefusals", 1)
            logger.error("account-level refusal: sending paused for the flow",
                         extra={"flow": msg.flow, "reason": verdict.reason})
            raise _HandBack(self.s.breaker_open_s, verdict.reason)
        elif kind is Kind.RATE_LIMITED:
            self.records_limiter.penalize()
            delay = max(1.0, verdict.retry_after_s or 5.0)
            if top and out.attempts == 1:
                raise _HandBack(delay, verdict.reason)
            raise RetryLater(delay, verdict.reason)
        else:  # TRANSIENT, UNKNOWN: keep the message, never call it a success
            if receive_count >= self.s.max_receive_count:
                reason = f"retries exhausted after {receive_count} attempts: {verdict.reason}"
                for row, call in zip(rows, calls, strict=True):
                    out.add(row, self._row(call, Status.FAILED, reason=reason))
                out.reason = reason
                out.status = "exhausted"
                return
            raise RetryLater(backoff_s(receive_count, self.s.retry_base_s, self.s.retry_max_s), verdict.reason)

    def _reserve(self, n: int, max_wait: float) -> tuple[bool, float]:
        """(granted, seconds): granted → sleep that long, then send; not granted → nothing was
        taken, come back after that long."""
        res = self.records_limiter.reserve(n, max_wait)
        if not res.granted:
            return False, res.wait_s
        wait = res.wait_s
        if self.requests_limiter is not None:
            req = self.requests_limiter.reserve(1, max(0.0, max_wait - wait))
            if not req.granted:
                return False, req.wait_s
            wait = max(wait, req.wait_s)
        return True, wait

    # ------------------------------------------------------------------ ending a chunk unsent
    def _cancel(self, ref: ChunkRef, out: Outcome, reason: str) -> Outcome:
        """The job was cancelled: the rows not yet decided end CANCELLED, nothing more is sent.
        Rows an earlier attempt recorded as accepted (it died before settling) stay ACCEPTED:
        Phonon has them, a cancel cannot take them back."""
        reason = safe_reason(reason)
        self._keep_earlier_accepted(ref, out)
        self._fill(ref, out, Status.CANCELLED, reason)
        logger.info("job cancelled: chunk settled unsent", extra={"job": ref.job, "chunk": ref.chunk,
                                                                  "cancelled": out.cancelled})
        self._record(ref, out)
        return out

    def _settle_after_error(self, msg: ChunkMessage, calls: list[dict], out: Outcome, receive_count: int,
                            err: Exception) -> Outcome:
        """The last receive raised: record the rows not yet decided as FAILED with the reason,
        settle the chunk so the report can be written, and send the message to the DLQ."""
        reason = f"retries exhausted after {receive_count} attempts: {describe_error(err)}"
        logger.error("chunk failed on its last receive: unsent rows settled FAILED",
                     extra={"job": msg.job, "chunk": msg.chunk, "receive_count": receive_count,
                            "error": describe_error(err)})
        if not out.claimed:  # it failed before taking the chunk's lease: take it now, to settle it
            claim = self.store.claim_chunk(msg.job, msg.chunk, self.s.chunk_lease_s, self.clock())
            if claim.state == "done":
                return Outcome("duplicate-delivery")  # sent and recorded by an earlier attempt: it stands
            if claim.state == "busy":
                # Another copy of the message holds the chunk and may be sending it right now:
                # its rows and dedupe claims are its holder's to settle. This copy goes to the
                # DLQ (a redrive finds the chunk settled, or takes it over once the lease ran out).
                logger.error("chunk held by another dispatcher: left to its holder",
                             extra={"job": msg.job, "chunk": msg.chunk, "receive_count": receive_count})
                raise err
            out.claimed = True
        ref = ChunkRef(msg.job, msg.chunk, msg.flow, list(msg.rows), calls)
        self._keep_earlier_accepted(ref, out)
        before = out.failed
        self._fill(ref, out, Status.FAILED, reason)
        if not out.claims and self.s.dedupe_window_hours > 0:
            out.claims = {row: (dedupe_hash(msg.flow, call, self.correlation_name), f"{msg.job}.{row}")
                          for row, call in zip(ref.rows, calls, strict=False)}
        # FAILED now, or already by this attempt (retries ran out, and recording that raised)
        failed_now = out.failed > before or out.status == "exhausted"
        self._record(ref, out, state="FAILED" if failed_now else "DONE", best_effort=True)
        if failed_now:
            out.status = "exhausted"
            out.reason = reason
            raise Exhausted(0, reason)
        return out

    def _keep_earlier_accepted(self, ref: ChunkRef, out: Outcome) -> None:
        """An earlier attempt may have recorded outcomes (and died before settling): its
        accepted rows keep that outcome."""
        for row, item in self._earlier_outcomes(ref).items():
            if item.get("status") == Status.ACCEPTED:
                out.add(row, item)

    def _earlier_outcomes(self, ref: ChunkRef) -> dict[int, dict]:
        try:
            item = self.store.find_outcome(ref.job, min(ref.rows))
            if item is None or int(item.get("chunk", -1)) != ref.chunk:
                return {}
            return {int(r["row"]): {**self._row({}, r.get("status", "")), **r} for r in decode_outcomes(item["outcomes"])}
        except Exception:  # only an optimisation of what we record: never fail the settle for it
            logger.warning("could not read the chunk's earlier outcomes", extra={"job": ref.job, "chunk": ref.chunk})
            return {}

    def _poison(self, body: str, problem: str) -> Outcome:
        """A message whose calls cannot be read: FAILED rows when it names a known job, chunk and
        rows; otherwise PoisonMessage (it goes to the DLQ)."""
        ref = ChunkRef.parse(body, self.correlation_name)
        if ref is None or self.store.get_job(ref.job) is None:
            raise PoisonMessage(problem)
        reason = f"not sent: the chunk message could not be read ({problem})"
        logger.error("unreadable chunk message: its rows settled FAILED",
                     extra={"job": ref.job, "chunk": ref.chunk, "problem": problem})
        n = self._end_unsent(ref, Status.FAILED, reason)
        return Outcome("settled", failed=n, reason=reason) if n else Outcome("duplicate-delivery")

    def _end_unsent(self, ref: ChunkRef, status: Status, reason: str) -> int:
        """Settle a chunk nobody sends (no claim taken): refused if it is DONE already."""
        out = Outcome("settled")
        self._fill(ref, out, status, reason)
        counters = {"accepted": out.accepted, "failed": out.failed, "duplicate": out.duplicate,
                    "cancelled": out.cancelled}
        state = "FAILED" if status == Status.FAILED else "DONE"
        if not self.store.settle_open_chunk(ref.job, ref.chunk, state, requests=0, **counters):
            return 0
        if self.s.dedupe_window_hours > 0 and ref.flow and ref.calls:
            out.claims = {row: (dedupe_hash(ref.flow, call, self.correlation_name), f"{ref.job}.{row}")
                          for row, call in zip(ref.rows, ref.calls, strict=True) if call}
        self._record(ref, out, state=state, best_effort=True, settled=True)
        return len(out.rows)

    def _fill(self, ref: ChunkRef, out: Outcome, status: Status, reason: str) -> None:
        for i, row in enumerate(ref.rows):
            call = ref.calls[i] if i < len(ref.calls) else {}
            out.add(row, self._row(call, status, reason=reason))

    # ------------------------------------------------------------------ recording
    def _row(self, call: dict, status: str, request_id: str | None = None, uuid: str | None = None,
             reason: str = "") -> dict:
        numbers = call.get("contact-numbers", [])
        return {"status": str(status), "cid": str(call.get("client-identifier", "")), "request_id": request_id or "",
                "phonon_uuid": uuid or "", "reason": reason,
                "numbers": list(numbers) if isinstance(numbers, list) else []}

    def _any_unsettled(self, owners: Iterable[str]) -> bool:
        """Whether any of these dedupe claim owners (`<job>.<row>`) has no outcome yet while its
        job is still active (`active_shard`, removed when it completes: a completed job's rows
        all have one, one read per job). A job item without it (e.g. the stub a local run keeps
        with its saved claims) is no job in progress: its claims stand as they are."""
        by_job: dict[str, list[int]] = {}
        for owner in owners:
            job, _, row = owner.rpartition(".")
            if row.isdigit():
                by_job.setdefault(job, []).append(int(row))
        for job, rows in by_job.items():
            meta = self.store.get_job(job)
            if (meta and meta.get("active_shard") and not meta.get("completed")
                    and self.store.any_without_outcome(job, rows)):
                return True
        return False

    def _file_of(self, job: str) -> str:
        """The S3 key of a job's file ("" when unknown), read once per job."""
        key = self._job_keys.get(job)
        if key is None:
            key = self._job_keys[job] = (self.store.get_job(job) or {}).get("key", "")
        return key

    def _duplicate_reason(self, owner: str) -> str:
        job, _, row = owner.rpartition(".")
        key = self._file_of(job) or "another file"
        window = self.s.dedupe_window_hours
        return f"the same call was already accepted from {key} row {row} within the last {window:g} h"

    def _record(self, ref: ChunkRef, out: Outcome, state: str | None = None, best_effort: bool = False,
                settled: bool = False) -> None:
        """Write the chunk's outcomes, its results items, settle and count it, and write the
        job's report when this was its last chunk. `best_effort` (a chunk's last chance): the
        results items and giving back dedupe claims (e.g. the flow's lock stays busy) may fail
        without stopping the settle."""
        now = int(self.clock())
        self.store.put_outcomes(ref.job, ref.chunk, [{"row": row, **item} for row, item in out.rows.items()], now)
        results = [self._result_item(ref, row, item, now) for row, item in out.rows.items()
                   if item["status"] == Status.ACCEPTED and item["phonon_uuid"]]
        if results:
            try:
                self.store.put_results(results)
            except Exception:
                if not best_effort:
                    raise
                # the flow-end webhook writes these items too (it finds the row's outcome)
                logger.warning("results items not written", extra={"job": ref.job, "chunk": ref.chunk})
        unsent = [out.claims[row] for row, item in out.rows.items()
                  if item["status"] in (Status.FAILED, Status.CANCELLED) and row in out.claims]
        if unsent:
            try:
                self.store.release_dedupe(ref.flow, unsent)
            except Exception:
                if not best_effort:
                    raise
                logger.warning("dedupe claims of unsent calls not given back; they lapse with the window",
                               extra={"job": ref.job, "chunk": ref.chunk, "claims": len(unsent)})
        state = state or ("FAILED" if out.status == "exhausted" else "DONE")
        if not settled:
            self.store.settle_chunk(ref.job, ref.chunk, state, accepted=out.accepted, failed=out.failed,
                                    duplicate=out.duplicate, cancelled=out.cancelled, requests=out.requests,
                                    api_attempts=out.attempts)
        if state == "FAILED":
            count("ChunksFailed", 1)
        count("CallsAccepted", out.accepted)
        count("CallsFailed", out.failed)
        count("CallsDuplicate", out.duplicate)
        count("CallsCancelled", out.cancelled)
        counters = {"accepted": out.accepted, "failed": out.failed, "duplicate": out.duplicate}
        if out.cancelled:
            counters["cancelled"] = out.cancelled
        first, meta = self.store.count_settled(ref.job, ref.chunk, **counters)
        if first or not meta.get("completed"):
            self.finisher.maybe_finalize(ref.job, meta)
        else:  # a redriven chunk settled again: refresh the report that was already written
            self.finisher.finalize(ref.job, force=True)

    def _result_item(self, ref: ChunkRef, row: int, item: dict, now: int) -> dict:
        return {"phonon-uuid": item["phonon_uuid"], "client-identifier": item["cid"],
                "request-id": item["request_id"], "flow-id": ref.flow, "job": ref.job, "file": self._file_of(ref.job),
                "row": row, "numbers": item["numbers"], "status": Status.ACCEPTED.value, "accepted_at": now,
                "expires_at": self.store.expiry(now)}


class _Cancelled(Exception):
    """The job was cancelled while this chunk waited for its send slot."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _HandBack(Exception):
    """Wait without spending an attempt: the message is re-queued with a delay."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


def requeue_with(sqs: Any, queue_url: str) -> Callable[[str, float], None]:
    """Put a copy of the message back with a delay (at most SQS's 15 minutes)."""
    def requeue(body: str, delay_s: float) -> None:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=max(0, min(900, math.ceil(delay_s))))
    return requeue


__all__ = ["ChunkMessage", "ChunkRef", "DispatchService", "Outcome", "Exhausted", "PoisonMessage", "RetryLater", "Verdict",
           "requeue_with"]
