"""Dispatch: one chunk message → (dedupe, rate limit) → one API request → every row's outcome.

Never a second call for the same customer:
- the chunk ledger (`store.ledger.claim_chunk`) lets one dispatcher at a time hold a chunk and drops
  redeliveries of a settled chunk;
- the request body is a pure function of the message (and the flow's security-id), so every
  resend is byte-identical and Phonon's checksum check answers 201 instead of calling again;
  a 201 on our resend therefore means "accepted earlier" and is recorded as such;
- dedupe claims (`store.dedupe.claim_dedupe`) stop the same call arriving again from another file.

`DispatchService.handle` makes no SQS call: it returns a `Decision` (`outcomes.py`) that the
handler carries out (`sqs_actions.py`). Waiting never kills a message: rate-limit waits, an
open circuit breaker and too little time left in the invocation are a `HandBack` (a copy of
the message re-queued with a delay, a fresh receive count) instead of a failure. Only answers
that may succeed later (5xx, 206, timeouts, unknown answers) are a `RetryAfter` (through the
visibility timeout, with exponential backoff).

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
- a paused job or flow (control.py; read when a chunk starts and right before every request)
  is a `HandBack` after `pause_poll_s`: the chunk waits unsent, spending no receive;
- a job or flow an operator capped (control.py, `limit`; read with the pause) takes its calls
  from the cap's own limiter before the global one; a chunk whose capped slot is further away
  than it may wait is a `HandBack` with that wait (docs/rate-limit.md, "Caps");
- a body over Phonon's 256 KB ceiling is never sent (Phonon would silently drop it): its rows
  end FAILED with the reason.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from botocore.exceptions import ClientError
from pydantic import ValidationError

from . import suppression, windows
from .api.body import MAX_BODY_BYTES, build_body, redact
from .api.classify import Kind, Verdict, classify
from .api.client import PhononClient
from .flows import FlowSecrets, UnknownFlow
from .jobs import ReportTrigger
from .limiter import CircuitBreaker, RateLimiter
from .observability import count, logger, mask_numbers
from .outcomes import ChunkOutcome, Decision, Done, Fate, HandBack, Poison, RetryAfter, RowOutcome
from .records import ChunkMessage, ChunkRef, Job, PoisonMessage, parse_row_ref, row_ref
from .settings import Settings
from .status import Status
from .store import ChunkState, Control, Store, decode_outcomes

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
# Fair share of the rate limit (docs/operating.md, "Fair share between jobs"). The limiter hands
# out slots first come, first served; a chunk holding a slot 20 s ahead makes every later chunk
# wait behind it. A chunk from the chunk queue (a campaign's backlog) therefore takes a slot
# only when it is at most this far ahead, and naps until then (in the invocation, nothing
# handed back); a chunk from the express lane takes the first free slot at once. So a small
# job's chunk waits behind at most this much of the campaign, however many dispatchers run,
# and the campaign loses nothing: its next slots are taken before they come due.
BULK_HORIZON_S = 3.0
# A capped job's or flow's chunk (control.py, `limit`) takes its cap's slot only when it is at
# most this far ahead, and is handed back with the wait otherwise: a dispatcher never sleeps
# long on a capped job while other jobs' chunks wait for it (a cap holds the job back, nobody
# else). Its chunks come back about when their slot is due.
CAP_HORIZON_S = BULK_HORIZON_S
# Set by the handler for the record being handled: it came from the express lane.
express_lane: ContextVar[bool] = ContextVar("express_lane", default=False)


def dedupe_hash(flow: str, call: dict, correlation_name: str) -> str:
    """Same flow, client-identifier, numbers, start-time and keys (without our own
    correlation key, which differs per file) → same hash."""
    keys = [k for k in call.get("keys", []) if not isinstance(k, dict) or k.get("name") != correlation_name]
    ident = {"flow": flow, "cid": call.get("client-identifier"), "numbers": call.get("contact-numbers"),
             "start": call.get("start-time"), "keys": keys}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _paused(reason: str, flow: str) -> str:
    """A pause's reason as a hand-back's: "job paused: …" (a flow's says "flow … paused: …")."""
    return reason if reason.startswith(f"flow {flow} paused: ") else f"job paused: {reason}"


def _held(scope: str, target: str, per_minute: int) -> str:
    """A cap's hand-back reason: "held at the job's cap of 100 calls/min"."""
    return (f"held at the job's cap of {per_minute:,} calls/min" if scope == "job"
            else f"held at flow {target}'s cap of {per_minute:,} calls/min")


def _tighter(now: int | None, taken: int | None) -> int | None:
    """The cap read now when it is stricter than the one a chunk took its slot from (a cap set
    or lowered since), else None."""
    return now if now is not None and (taken is None or now < taken) else None


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter' (half fixed, half random)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)




def safe_reason(text: str) -> str:
    """An error's text fit for a report reason: one line, bounded, and any phone-like number (one
    could hide in a library's message) masked to its last 3 digits (observability.mask_numbers)."""
    text = mask_numbers(redact(" ".join(str(text).split())))
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "…"


def describe_error(err: BaseException) -> str:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return safe_reason(f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": "))
    text = str(err)
    return safe_reason(f"{type(err).__name__}: {text}" if text else type(err).__name__)


@dataclass
class _Step:
    """What one step of sending decided, as a value: rows decided, the halves still to send
    (bisection), or why the rest waits."""

    rows: list[RowOutcome] = field(default_factory=list)
    halves: list[tuple[list[dict], list[int]]] = field(default_factory=list)
    stop: RetryAfter | HandBack | None = None  # the undecided rows wait: through SQS, or handed back
    cancelled: str = ""  # the job was cancelled while the chunk waited for its send slot
    exhausted: str = ""  # the last receive's answer stayed transient: its rows are FAILED with this reason


@dataclass
class _Sent:
    """What sending a chunk decided, as a value: the rows it decided, the requests it made, and
    why it stopped before deciding the rest, if it did. Rows decided before a stop (or an
    error) are kept: on the last receive they keep their outcome."""

    rows: dict[int, RowOutcome] = field(default_factory=dict)
    claims: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> dedupe (hash, owner)
    requests: int = 0
    attempts: int = 0
    stop: RetryAfter | HandBack | None = None
    cancelled: str = ""
    exhausted: str = ""
    error: Exception | None = None  # an unexpected failure after `rows` were decided

    def take(self, step: _Step) -> None:
        for o in step.rows:
            self.rows.setdefault(o.row, o)
        self.stop = step.stop
        self.cancelled = step.cancelled
        self.exhausted = step.exhausted or self.exhausted


class DispatchService:
    def __init__(self, settings: Settings, store: Store, client: Callable[[], PhononClient], secrets: FlowSecrets,
                 finisher: ReportTrigger, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, send_margin_s: float = SEND_MARGIN_S):
        self.s = settings
        self.store = store
        self._client_factory = client  # PhononClient is not thread-safe: one per worker thread
        self._local = threading.local()
        self.secrets = secrets
        self.finisher = finisher
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
    def handle(self, body: str, receive_count: int, remaining_s: Callable[[], float]) -> Decision:
        """What to do with one chunk message (its `receive_count`-th receive; `remaining_s`: the
        seconds left in this invocation). Never raises: an unexpected error is a `RetryAfter`
        with the queue's own visibility timeout (what SQS does with any failed record)."""
        try:
            return self._handle_message(body, receive_count, remaining_s)
        except Exception as err:
            logger.exception("chunk failed", extra={"receive_count": receive_count})
            return RetryAfter(None, describe_error(err))

    def abandon(self, body: str, status: Status | str, reason: str) -> int:
        """End a chunk message's rows without sending anything: every row not yet settled gets
        `status` (e.g. CANCELLED, FAILED) with `reason` and its client-identifier, and the chunk
        is settled and counted, so the job's report can be written. Returns the number of rows
        written: 0 when the message does not name its job, chunk and rows, when its job is
        unknown, or when the chunk was sent and settled already (its outcome stands)."""
        ref = ChunkRef.parse(body, self.correlation_name)
        if ref is None or self.store.jobs.get_job(ref.job) is None:
            return 0
        return self._end_unsent(ref, Status(status), safe_reason(reason))

    # ------------------------------------------------------------------ the work
    def _handle_message(self, body: str, receive_count: int, remaining_s: Callable[[], float]) -> Decision:
        try:
            try:
                msg = ChunkMessage.model_validate_json(body)
            except ValidationError as err:
                raise PoisonMessage(f"not a chunk message: {err.error_count()} validation errors") from None
            calls = msg.complete_calls(self.correlation_name)
        except PoisonMessage as err:
            return self._poison(body, str(err))

        out = ChunkOutcome(Fate.SETTLED)
        try:
            return self._handle(msg, calls, receive_count, remaining_s, out)
        except Exception as err:
            if receive_count < self.s.max_receive_count:
                if out.claimed:  # give the lease back: the retry need not wait for it to run out
                    try:
                        self.store.ledger.release_chunk(msg.job, msg.chunk)
                    except Exception:
                        logger.warning("chunk lease not given back", extra={"job": msg.job, "chunk": msg.chunk})
                raise
            return self._settle_after_error(msg, calls, out, receive_count, describe_error(err), None)

    def _handle(self, msg: ChunkMessage, calls: list[dict], receive_count: int, remaining_s: Callable[[], float],
                out: ChunkOutcome) -> Decision:
        if receive_count > self.s.max_receive_count:
            # Settled FAILED on its last attempt already; SQS has not moved it to the DLQ yet
            # (its maxReceiveCount is higher than ours): do not send again, let it go there.
            return RetryAfter(0, f"retries exhausted ({receive_count - 1} attempts)")

        ctl = self.store.jobs.control(msg.job, msg.flow)  # control.py
        cancelled, paused = ctl.cancelled, ctl.paused
        if paused and not cancelled:  # wait unsent, nothing taken (a cancel wins: it settles the chunk)
            return HandBack(self.s.pause_poll_s, _paused(paused, msg.flow))
        if not cancelled:
            # A capped chunk whose slot is far: handed back before its lease and dedupe claims
            # are taken (a look: one read per cap, nothing written; `_ready` takes the slot), and
            # before the breaker's check, which may hand this chunk the flow's one probe.
            for limiter, reason in self._caps(msg, ctl):
                far = limiter.next_slot(len(calls))
                if far > CAP_HORIZON_S:
                    count("ChunksHeldAtCap", 1)
                    return HandBack(far, reason)
        breaker = CircuitBreaker(self.store, msg.flow, self.s.breaker_open_s, self.clock)
        probe = False
        if not cancelled:  # a cancelled chunk is settled at once, whatever the flow's breaker says
            state = breaker.check()
            if not state.allow:
                return HandBack(state.wait_s, f"flow {msg.flow} paused: {state.reason}")
            probe = state.probe
        wait = None if cancelled else windows.chunk_wait(self.s, self.store.jobs, msg.job, msg.flow, calls, self.clock())
        if wait is not None:  # the calling window is closed: hand back unsent (docs/calling-windows.md)
            return HandBack(wait.seconds, wait.reason)

        claim = self.store.ledger.claim_chunk(msg.job, msg.chunk, self.s.chunk_lease_s, self.clock())
        if claim.state == "done":
            logger.info("chunk already settled: redelivery dropped", extra={"job": msg.job, "chunk": msg.chunk})
            # An earlier attempt may have died after settling: counting is idempotent, and so
            # is the report (written once, by whoever completes the count).
            _, item = self.store.ledger.count_settled(msg.job, msg.chunk)
            meta = Job.from_item(item)
            if not meta.completed:
                self.finisher.settled(msg.job, meta)
            return Done(ChunkOutcome(Fate.DUPLICATE_DELIVERY))
        if claim.state == "busy":
            return HandBack(claim.lease_left_s + 1, "another dispatcher holds this chunk")

        out.claimed = True
        ref = ChunkRef(msg.job, msg.chunk, msg.flow, list(msg.rows), calls)
        if cancelled:
            return Done(self._cancel(ref, out, cancelled))
        sent = self._dispatch(msg, calls, receive_count, remaining_s, breaker, probe, ctl)
        for o in sent.rows.values():
            out.add(o)
        out.claims.update(sent.claims)
        out.requests += sent.requests
        out.attempts += sent.attempts
        if sent.error is not None:
            raise sent.error
        if sent.cancelled:
            return Done(self._cancel(ref, out, sent.cancelled))
        if isinstance(sent.stop, RetryAfter):
            if receive_count >= self.s.max_receive_count:
                # The last receive: keep the lease until its rows are settled, so no other copy
                # of the message starts sending them meanwhile.
                return self._settle_after_error(msg, calls, out, receive_count, sent.stop.reason, sent.stop.seconds)
            if not self.store.ledger.note_chunk(msg.job, msg.chunk, state=ChunkState.RETRY, lease_until=0):
                return self._settled_meanwhile(msg)
            return sent.stop
        if isinstance(sent.stop, HandBack):
            if not self.store.ledger.note_chunk(msg.job, msg.chunk, state=ChunkState.WAITING, lease_until=0):
                return self._settled_meanwhile(msg)
            return sent.stop
        if sent.exhausted:
            out.fate, out.reason = Fate.EXHAUSTED, sent.exhausted
        self._record(ref, out)
        if out.fate is Fate.EXHAUSTED:
            return RetryAfter(0, out.reason)  # to the DLQ: this was the last receive
        return Done(out)

    def _settled_meanwhile(self, msg: ChunkMessage) -> Done:
        """This invocation was to hand its chunk back, but the chunk was settled meanwhile (by
        another copy of the message, an abandoned run): its outcome stands, this copy ends."""
        logger.warning("chunk settled meanwhile: not handed back", extra={"job": msg.job, "chunk": msg.chunk})
        return Done(ChunkOutcome(Fate.DUPLICATE_DELIVERY))

    def _dispatch(self, msg: ChunkMessage, calls: list[dict], receive_count: int, remaining_s: Callable[[], float],
                  breaker: CircuitBreaker, probe: bool, ctl: Control) -> _Sent:
        """Dedupe the chunk's calls, then send the rest: what was decided for its rows."""
        sent = _Sent()
        rows = list(msg.rows)

        # Dedupe across files, decided once per chunk and identically on every retry.
        if self.s.dedupe_window_hours > 0:
            sent.claims.update(self._claims(msg.flow, msg.job, zip(rows, calls, strict=True)))
            try:
                conflicts = self.store.dedupe.claim_dedupe(msg.flow, list(sent.claims.values()),
                                                    self.s.dedupe_window_hours * 3600, self.clock())
            except TimeoutError as err:  # the flow's dedupe lock stayed busy; nothing was sent
                sent.take(_Step(stop=HandBack(LOCK_BUSY_DELAY_S, str(err))))
                return sent
            if conflicts and self._any_unsettled(conflicts.values()):
                # The same call is claimed by a row whose outcome is not known yet (its chunk is
                # being sent or retried): it is no duplicate of an accepted call yet. Wait for
                # that outcome (a FAILED row gives its claim back) instead of guessing.
                sent.take(_Step(stop=HandBack(DEDUPE_PENDING_DELAY_S,
                                              "waiting for the outcome of the same call from another file")))
                return sent
            if conflicts:
                keep_calls, keep_rows, duplicates = [], [], []
                for row, call in zip(rows, calls, strict=True):
                    other = conflicts.get(sent.claims[row][0])
                    if other is None:
                        keep_calls.append(call)
                        keep_rows.append(row)
                    else:
                        duplicates.append(RowOutcome.of_call(row, call, Status.DUPLICATE,
                                                             reason=self._duplicate_reason(other)))
                sent.take(_Step(duplicates))
                calls, rows = keep_calls, keep_rows

        if not calls:
            return sent
        try:
            security_id = self.secrets.security_id(msg.flow)
        except UnknownFlow as err:
            sent.take(_Step([RowOutcome.of_call(row, call, Status.FAILED, reason=err.reason)
                             for row, call in zip(rows, calls, strict=True)]))
            return sent
        result = self._send(msg, calls, rows, security_id, receive_count, remaining_s, breaker, probe, ctl)
        result.rows.update(sent.rows)  # the duplicates (rows never sent)
        result.claims = sent.claims
        return result

    def _out_of_time(self, attempts: int, left: float) -> _Step:
        reason = (f"not sent: {left:.1f} s left in this invocation, and a request may take "
                  f"{self.request_time_s:.1f} s (connect + read timeout + margin)")
        if not attempts:
            return _Step(stop=HandBack(OUT_OF_TIME_DELAY_S, reason))
        return _Step(stop=RetryAfter(OUT_OF_TIME_DELAY_S, reason))  # part of a split chunk went already: resend it all

    def _send(self, msg: ChunkMessage, calls: list[dict], rows: list[int], security_id: str, receive_count: int,
              remaining_s: Callable[[], float], breaker: CircuitBreaker, probe: bool, ctl: Control) -> _Sent:
        """Send these calls and return what was decided for their rows. A body Phonon refuses
        for one of its records is split in two and each half sent, depth first (an explicit
        work-list: the first half is decided before the second is sent); every sub-body is
        deterministic too. Stops at the first part that has to wait, keeping what earlier parts
        decided; an unexpected error is returned in `error` along with them."""
        sent = _Sent()
        work = [(calls, rows)]
        while work and sent.stop is None and not sent.cancelled:
            part_calls, part_rows = work.pop()
            top = part_rows is rows  # the whole chunk, not a half of it
            try:
                ready = self._ready(msg, part_calls, part_rows, security_id, remaining_s, top, sent.attempts, ctl)
                if isinstance(ready, _Step):
                    sent.take(ready)
                    continue
                part_calls, part_rows, ready = suppression.before_send(  # the list again, after any wait
                    self.s, msg.job, msg.flow, part_rows, part_calls, ready,  # (docs/suppression.md)
                    lambda row, call, why: sent.rows.setdefault(row, RowOutcome.of_call(
                        row, call, Status.SUPPRESSED, reason=why)),
                    lambda kept: build_body(security_id, msg.flow, kept))
                if not part_calls:
                    continue
                answer = self.client.post(ready)
                sent.attempts += 1
                answered = answer.http_status is not None
                sent.requests += answered
                verdict = classify(answer, on_retry=receive_count > 1)
                # Phonon's (or a gateway's) message may name a number: mask it before the reason goes
                # into a row, a log line or a retry (the security-id is redacted by `classify` already).
                verdict = replace(verdict, reason=safe_reason(verdict.reason))
                count(f"Api{verdict.kind.name.title().replace('_', '')}")
                closes = probe and top and verdict.kind is not Kind.ACCOUNT
                # The answer's rows are decided before anything more is written: a write failing
                # now (DynamoDB throttling) cannot lose an answer Phonon gave. On the last receive
                # the decided rows keep their outcome (and their dedupe claims); before it, the
                # identical resend is answered 201.
                try:
                    step = self._decide(msg, part_calls, part_rows, receive_count, breaker, top, verdict)
                    sent.take(step)
                    work.extend(reversed(step.halves))
                finally:
                    self.store.jobs.add_to_job(msg.job, api_attempts=1, **({"api_requests": 1} if answered else {}))
                    if closes:
                        breaker.close()
            except Exception as err:
                sent.error = err
                break
        return sent

    def _ready(self, msg: ChunkMessage, calls: list[dict], rows: list[int], security_id: str,
               remaining_s: Callable[[], float], top: bool, attempts: int, ctl: Control) -> bytes | _Step:
        """The request body once it may be sent (its rate-limit slot taken, time enough left),
        or the step that ends these rows unsent or makes them wait."""
        body = build_body(security_id, msg.flow, calls)
        if len(body) > MAX_BODY_BYTES:
            # Chunks are sized for a 64-character security-id; whatever made this one bigger, a
            # body over 256 KB is silently not processed by Phonon: never send it.
            reason = (f"not sent: the request body would be {len(body):,} bytes, over Phonon's limit of "
                      f"{MAX_BODY_BYTES:,} bytes (256 KB), which it silently does not process")
            count("BodiesTooLarge", 1)
            return _Step([RowOutcome.of_call(row, call, Status.FAILED, reason=reason)
                          for row, call in zip(rows, calls, strict=True)])

        left = remaining_s()
        if left < self.request_time_s:
            return self._out_of_time(attempts, left)
        max_wait = max(0.0, min(self.s.dispatch_max_wait_s, left - self.request_time_s - WAKE_SLACK_S))
        # Caps are taken for a chunk's first, whole body only: the halves of a body split to find
        # a refused record are calls the whole body paid for already (charging them again held
        # every half past the cap's horizon, and the split never finished). And only when the
        # global limit would grant the body now: a cap slot taken and then refused globally is
        # lost, which would slow the capped job below its cap (the limiter cannot give one back).
        caps = self._caps(msg, ctl) if top and not attempts else []
        if caps:
            far = self.records_limiter.next_slot(len(calls))
            if far > max_wait:  # come back when the global slot is near (`_reserve`'s convention)
                return _Step(stop=HandBack(max(0.0, far - max_wait / 2), "waiting for the rate limit"))
            held = self._reserve_caps(caps, len(calls), max_wait)
            if isinstance(held, HandBack):  # nothing taken from the global limit
                count("ChunksHeldAtCap", 1)
                return _Step(stop=held)
            if held:  # slept until the cap's slot: what is left to wait for the global one
                left = remaining_s()
                if left < self.request_time_s:
                    return self._out_of_time(attempts, left)
                max_wait = max(0.0, min(max_wait - held, left - self.request_time_s - WAKE_SLACK_S))
        granted, wait, napped = self._reserve(len(calls), max_wait)
        if not granted:  # `wait`: when to come back
            if top and not attempts:
                return _Step(stop=HandBack(wait, "waiting for the rate limit"))
            return _Step(stop=RetryAfter(wait, "waiting for the rate limit while splitting a chunk"))
        if wait > 0 or napped:
            self.sleep(wait)
            left = remaining_s()
            if left < self.request_time_s:
                return self._out_of_time(attempts, left)
        # Right before the request: the job may have been cancelled or paused meanwhile (during
        # the rate-limit wait, or while an earlier part of this chunk was sent).
        again = self.store.jobs.control(msg.job, msg.flow)
        cancelled, paused = again.cancelled, again.paused
        if cancelled:  # its rows not decided yet end CANCELLED (`_cancel`), nothing more is sent
            return _Step(cancelled=cancelled)
        if paused and not attempts:
            # Nothing of this chunk went out: hand it back whole (its rate-limit slot is given
            # up). The chunk's lease is released by the HandBack path (`note_chunk` WAITING).
            return _Step(stop=HandBack(self.s.pause_poll_s, _paused(paused, msg.flow)))
        if not attempts and not paused:
            # A cap set (or lowered) while this chunk waited for its slot: the chunk read none
            # when it started, so it took nothing from the new cap. Handed back whole, like a
            # pause (its global slot is given up, once per cap change): it comes back when
            # the new cap's slot is due and takes it as every chunk does.
            # (A cap raised or removed meanwhile: the stricter one was taken, the chunk goes.)
            fresh = self._caps(msg, Control(job_cap=_tighter(again.job_cap, ctl.job_cap),
                                            flow_cap=_tighter(again.flow_cap, ctl.flow_cap)))
            if fresh:
                count("ChunksHeldAtCap", 1)
                return _Step(stop=HandBack(max(limiter.next_slot(len(calls)) for limiter, _ in fresh), fresh[0][1]))
        if paused:
            # Part of this chunk was sent already (a body Phonon refused for one record, being
            # split in halves): the rest of this chunk still goes out, then the pause holds from
            # the chunk after. Stopping here would need either a resend of the halves already
            # accepted (the RetryAfter path of a chunk split mid-way relies on Phonon answering
            # 201 to the identical resend: a second request for those rows, and a receive spent)
            # or a per-row record of what is left (the chunk message cannot carry it). A cancel
            # stops at once instead, because its unsent rows never need sending.
            logger.info("job paused while its chunk was being split: the chunk's last parts are sent",
                        extra={"job": msg.job, "chunk": msg.chunk})
        return body

    def _decide(self, msg: ChunkMessage, calls: list[dict], rows: list[int], receive_count: int,
                breaker: CircuitBreaker, top: bool, verdict: Verdict) -> _Step:
        """What Phonon's answer means for these rows: their outcomes, the halves to send (a bad
        record among several), or why they wait."""
        kind = verdict.kind
        request_id = verdict.request_id or ""
        if kind is Kind.ACCEPTED or kind is Kind.ALREADY_ACCEPTED:
            note = "" if kind is Kind.ACCEPTED else (
                "accepted by an earlier attempt: Phonon answered 201 Checksum Repeated to the identical resend")
            return _Step([RowOutcome.of_call(
                row, call, Status.ACCEPTED, request_id=request_id,
                phonon_uuid=verdict.accepted_ids.get(str(call.get("client-identifier", "")), ""),
                reason="; ".join(x for x in (msg.warn.get(str(row), ""), note) if x))
                for row, call in zip(rows, calls, strict=True)])
        if kind is Kind.PARTIAL:
            step = _Step()
            for row, call in zip(rows, calls, strict=True):
                issued = verdict.accepted_ids.get(str(call.get("client-identifier", "")))
                step.rows.append(RowOutcome.of_call(row, call, Status.ACCEPTED, request_id=request_id,
                                                    phonon_uuid=issued, reason=msg.warn.get(str(row), ""))
                                 if issued else
                                 RowOutcome.of_call(row, call, Status.FAILED, request_id=request_id,
                                                    reason=f"{verdict.reason}; this call was not among the accepted ones"))
            return step
        if kind in (Kind.RECORD, Kind.TOO_LARGE) and len(calls) > 1:
            half = len(calls) // 2  # find the offending calls by bisection
            return _Step(halves=[(calls[:half], rows[:half]), (calls[half:], rows[half:])])
        if kind in (Kind.RECORD, Kind.TOO_LARGE, Kind.FLOW, Kind.PERMANENT):
            return _Step([RowOutcome.of_call(row, call, Status.FAILED, reason=verdict.reason)
                          for row, call in zip(rows, calls, strict=True)])
        if kind is Kind.ACCOUNT:
            breaker.trip(verdict.reason, verdict.code)
            count("AccountRefusals", 1)
            logger.error("account-level refusal: sending paused for the flow",
                         extra={"flow": msg.flow, "reason": verdict.reason})
            return _Step(stop=HandBack(self.s.breaker_open_s, verdict.reason))
        if kind is Kind.RATE_LIMITED:
            self.records_limiter.penalize()
            delay = max(1.0, verdict.retry_after_s or 5.0)
            return _Step(stop=HandBack(delay, verdict.reason) if top else RetryAfter(delay, verdict.reason))
        # TRANSIENT, UNKNOWN: keep the message, never call it a success
        if receive_count >= self.s.max_receive_count:
            reason = f"retries exhausted after {receive_count} attempts: {verdict.reason}"
            return _Step([RowOutcome.of_call(row, call, Status.FAILED, reason=reason)
                          for row, call in zip(rows, calls, strict=True)], exhausted=reason)
        return _Step(stop=RetryAfter(backoff_s(receive_count, self.s.retry_base_s, self.s.retry_max_s),
                                     verdict.reason))

    def _caps(self, msg: ChunkMessage, ctl: Control) -> list[tuple[RateLimiter, str]]:
        """The caps a chunk's calls are taken from, job's first (each with its hand-back reason):
        none for a job without one (no read, no write). A capped job in a capped flow takes from
        both: the flow's cap counts every job of the flow."""
        out: list[tuple[RateLimiter, str]] = []
        for scope, target, cap in (("job", msg.job, ctl.job_cap), ("flow", msg.flow, ctl.flow_cap)):
            if cap is not None and target:
                limiter = RateLimiter.for_cap(self.store, scope, target, cap, self.s.rate_jitter_allowance_s,
                                              self.clock)
                out.append((limiter, _held(scope, target, cap)))
        return out

    def _reserve_caps(self, caps: list[tuple[RateLimiter, str]], n: int, max_wait: float) -> HandBack | float:
        """Take n calls' slot from each cap in turn, sleeping until it is due (at most
        CAP_HORIZON_S each): the seconds slept; or a `HandBack` with the wait when a cap's slot
        is further away (a cap granted before it stays taken: only the capped job is slowed).
        The global limiter is asked after, from the moment the caps allow: its slot is never
        held while a cap is waited for."""
        slept = 0.0
        for limiter, reason in caps:
            horizon = max(0.0, min(max_wait - slept, CAP_HORIZON_S))
            res = limiter.reserve(n, horizon)
            if not res.granted:
                to_slot = res.wait_s + horizon / 2  # RateLimiter.reserve: "come back" = wait - max_wait / 2
                return HandBack(max(to_slot, 0.0), reason)
            if res.wait_s > 0:
                self.sleep(res.wait_s)
                slept += res.wait_s
        return slept

    def _reserve(self, n: int, max_wait: float) -> tuple[bool, float, float]:
        """(granted, seconds, napped): granted → sleep that long, then send; not granted →
        nothing was taken, come back after that long. `napped`: seconds slept here waiting for
        a slot within BULK_HORIZON_S (a chunk of the chunk queue; express chunks never nap)."""
        budget, napped = max_wait, 0.0
        horizon = max_wait if express_lane.get() else min(max_wait, BULK_HORIZON_S)
        while True:
            res = self.records_limiter.reserve(n, horizon)
            if res.granted:
                break
            to_slot = res.wait_s + horizon / 2  # RateLimiter.reserve: "come back" = wait - max_wait / 2
            if horizon >= budget or to_slot > budget:
                return False, max(0.0, to_slot - budget / 2), napped
            nap = max(0.05, res.wait_s)
            self.sleep(nap)
            budget -= nap
            napped += nap
            horizon = min(horizon, budget)
        wait = res.wait_s
        if self.requests_limiter is not None:
            req = self.requests_limiter.reserve(1, max(0.0, budget - wait))
            if not req.granted:
                return False, req.wait_s, napped
            wait = max(wait, req.wait_s)
        return True, wait, napped

    # ------------------------------------------------------------------ ending a chunk unsent
    def _cancel(self, ref: ChunkRef, out: ChunkOutcome, reason: str) -> ChunkOutcome:
        """The job was cancelled: the rows not yet decided end CANCELLED, nothing more is sent.
        Rows an earlier attempt recorded as accepted (it died before settling) stay ACCEPTED:
        Phonon has them, a cancel cannot take them back."""
        reason = safe_reason(reason)
        self._keep_earlier_accepted(ref, out)
        self._fill(ref, out, Status.CANCELLED, reason)
        logger.info("job cancelled: chunk settled unsent", extra={"job": ref.job, "chunk": ref.chunk,
                                                                  "cancelled": out.count(Status.CANCELLED)})
        self._record(ref, out)
        return out

    def _settle_after_error(self, msg: ChunkMessage, calls: list[dict], out: ChunkOutcome, receive_count: int,
                            error: str, retry_s: float | None) -> Decision:
        """The last receive failed (`error`, already fit for a reason): record the rows not yet
        decided as FAILED with the reason, settle the chunk so the report can be written, and
        send the message to the DLQ (`RetryAfter`; `retry_s` when the chunk is left to another
        holder: what this receive was told to wait)."""
        reason = f"retries exhausted after {receive_count} attempts: {error}"
        logger.error("chunk failed on its last receive: unsent rows settled FAILED",
                     extra={"job": msg.job, "chunk": msg.chunk, "receive_count": receive_count, "error": error})
        if not out.claimed:  # it failed before taking the chunk's lease: take it now, to settle it
            claim = self.store.ledger.claim_chunk(msg.job, msg.chunk, self.s.chunk_lease_s, self.clock())
            if claim.state == "done":  # sent and recorded by an earlier attempt: it stands
                return Done(ChunkOutcome(Fate.DUPLICATE_DELIVERY))
            if claim.state == "busy":
                # Another copy of the message holds the chunk and may be sending it right now:
                # its rows and dedupe claims are its holder's to settle. This copy goes to the
                # DLQ (a redrive finds the chunk settled, or takes it over once the lease ran out).
                logger.error("chunk held by another dispatcher: left to its holder",
                             extra={"job": msg.job, "chunk": msg.chunk, "receive_count": receive_count})
                return RetryAfter(retry_s, error)
            out.claimed = True
        ref = ChunkRef(msg.job, msg.chunk, msg.flow, list(msg.rows), calls)
        self._keep_earlier_accepted(ref, out)
        before = out.count(Status.FAILED)
        self._fill(ref, out, Status.FAILED, reason)
        if not out.claims and self.s.dedupe_window_hours > 0:
            out.claims = self._claims(msg.flow, msg.job, zip(ref.rows, calls, strict=False))
        # FAILED now, or already by this attempt (retries ran out, and recording that raised)
        failed_now = out.count(Status.FAILED) > before or out.fate is Fate.EXHAUSTED
        self._record(ref, out, state=ChunkState.FAILED if failed_now else ChunkState.DONE, best_effort=True)
        if failed_now:
            out.fate, out.reason = Fate.EXHAUSTED, reason
            return RetryAfter(0, reason)
        return Done(out)

    def _keep_earlier_accepted(self, ref: ChunkRef, out: ChunkOutcome) -> None:
        """An earlier attempt may have recorded outcomes (and died before settling): its
        accepted rows keep that outcome."""
        for outcome in self._earlier_accepted(ref):
            out.add(outcome)

    def _earlier_accepted(self, ref: ChunkRef) -> list[RowOutcome]:
        try:
            item = self.store.rows.find_outcome(ref.job, min(ref.rows))
            if item is None or int(item.get("chunk", -1)) != ref.chunk:
                return []
            return [RowOutcome.from_item(r) for r in decode_outcomes(item["outcomes"])
                    if r.get("status") == Status.ACCEPTED]
        except Exception:  # only an optimisation of what we record: never fail the settle for it
            logger.warning("could not read the chunk's earlier outcomes", extra={"job": ref.job, "chunk": ref.chunk})
            return []

    def _poison(self, body: str, problem: str) -> Decision:
        """A message whose calls cannot be read: FAILED rows when it names a known job, chunk and
        rows; otherwise `Poison` (it goes to the DLQ)."""
        ref = ChunkRef.parse(body, self.correlation_name)
        if ref is None or self.store.jobs.get_job(ref.job) is None:
            return Poison(problem)
        reason = f"not sent: the chunk message could not be read ({problem})"
        logger.error("unreadable chunk message: its rows settled FAILED",
                     extra={"job": ref.job, "chunk": ref.chunk, "problem": problem})
        out = ChunkOutcome(Fate.SETTLED, reason=reason)
        if not self._end_unsent(ref, Status.FAILED, reason, out):
            return Done(ChunkOutcome(Fate.DUPLICATE_DELIVERY))
        return Done(out)

    def _end_unsent(self, ref: ChunkRef, status: Status, reason: str, out: ChunkOutcome | None = None) -> int:
        """Settle a chunk nobody sends (no claim taken): refused if it is DONE already."""
        out = out if out is not None else ChunkOutcome(Fate.SETTLED)
        self._fill(ref, out, status, reason)
        state = ChunkState.FAILED if status == Status.FAILED else ChunkState.DONE
        if not self.store.ledger.settle_open_chunk(ref.job, ref.chunk, state, requests=0, **out.counters()):
            return 0
        if self.s.dedupe_window_hours > 0 and ref.flow and ref.calls:
            out.claims = self._claims(ref.flow, ref.job,
                                      ((row, call) for row, call in zip(ref.rows, ref.calls, strict=True) if call))
        self._record(ref, out, state=state, best_effort=True, settled=True)
        return len(out.rows)

    def _claims(self, flow: str, job: str, rows_calls: Iterable[tuple[int, dict]]) -> dict[int, tuple[str, str]]:
        """Each row's dedupe claim: (the call's dedupe hash, the row's reference as owner)."""
        return {row: (dedupe_hash(flow, call, self.correlation_name), row_ref(job, row)) for row, call in rows_calls}

    def _fill(self, ref: ChunkRef, out: ChunkOutcome, status: Status, reason: str) -> None:
        """Every row of the chunk not decided yet gets `status` with `reason`."""
        for i, row in enumerate(ref.rows):
            out.add(RowOutcome.of_call(row, ref.calls[i] if i < len(ref.calls) else {}, status, reason=reason))

    # ------------------------------------------------------------------ recording
    def _any_unsettled(self, owners: Iterable[str]) -> bool:
        """Whether any of these dedupe claim owners (`<job>.<row>`) has no outcome yet while its
        job is still active (`active_shard`, removed when it completes: a completed job's rows
        all have one, one read per job). A job item without it (e.g. the stub a local run keeps
        with its saved claims) is no job in progress: its claims stand as they are."""
        by_job: dict[str, list[int]] = {}
        for owner in owners:
            parsed = parse_row_ref(owner)
            if parsed is not None:
                by_job.setdefault(parsed[0], []).append(parsed[1])
        for job, rows in by_job.items():
            meta = Job.from_item(self.store.jobs.get_job(job))
            if meta.active_shard and not meta.completed and self.store.rows.any_without_outcome(job, rows):
                return True
        return False

    def _file_of(self, job: str) -> str:
        """The S3 key of a job's file ("" when unknown), read once per job."""
        key = self._job_keys.get(job)
        if key is None:
            key = self._job_keys[job] = Job.from_item(self.store.jobs.get_job(job)).key
        return key

    def _duplicate_reason(self, owner: str) -> str:
        window = self.s.dedupe_window_hours
        parsed = parse_row_ref(owner)
        if parsed is None:
            return f"the same call was already accepted from another file within the last {window:g} h"
        key = self._file_of(parsed[0]) or "another file"
        return f"the same call was already accepted from {key} row {parsed[1]} within the last {window:g} h"

    def _record(self, ref: ChunkRef, out: ChunkOutcome, state: ChunkState | None = None, best_effort: bool = False,
                settled: bool = False) -> None:
        """Write the chunk's outcomes, its results items, settle and count it, and write the
        job's report when this was its last chunk. `best_effort` (a chunk's last chance): the
        results items and giving back dedupe claims (e.g. the flow's lock stays busy) may fail
        without stopping the settle."""
        now = int(self.clock())
        self.store.rows.put_outcomes(ref.job, ref.chunk, [o.to_item() for o in out.rows.values()], now)
        results = [self._result_item(ref, o, now) for o in out.rows.values()
                   if o.status is Status.ACCEPTED and o.phonon_uuid]
        if results:
            try:
                self.store.results.put_results(results)
            except Exception:
                if not best_effort:
                    raise
                # the flow-end webhook writes these items too (it finds the row's outcome)
                logger.warning("results items not written", extra={"job": ref.job, "chunk": ref.chunk})
        unsent = [out.claims[o.row] for o in out.rows.values()
                  if o.status in (Status.FAILED, Status.CANCELLED, Status.SUPPRESSED) and o.row in out.claims]
        if unsent:
            try:
                self.store.dedupe.release_dedupe(ref.flow, unsent)
            except Exception:
                if not best_effort:
                    raise
                logger.warning("dedupe claims of unsent calls not given back; they lapse with the window",
                               extra={"job": ref.job, "chunk": ref.chunk, "claims": len(unsent)})
        state = state or (ChunkState.FAILED if out.fate is Fate.EXHAUSTED else ChunkState.DONE)
        counters = out.counters()
        if not settled:
            self.store.ledger.settle_chunk(ref.job, ref.chunk, state, **counters, requests=out.requests,
                                    api_attempts=out.attempts)
        if state == ChunkState.FAILED:
            count("ChunksFailed", 1)
        count("CallsAccepted", counters["accepted"])
        count("CallsFailed", counters["failed"])
        count("CallsDuplicate", counters["duplicate"])
        count("CallsCancelled", counters["cancelled"])
        if not counters["cancelled"]:
            del counters["cancelled"]
        first, item = self.store.ledger.count_settled(ref.job, ref.chunk, **counters)
        meta = Job.from_item(item)
        if first or not meta.completed:
            self.finisher.settled(ref.job, meta)
        else:  # a redriven chunk settled again: refresh the report that was already written
            self.finisher.settled(ref.job)

    def _result_item(self, ref: ChunkRef, o: RowOutcome, now: int) -> dict:
        return {"phonon-uuid": o.phonon_uuid, "client-identifier": o.cid, "request-id": o.request_id,
                "flow-id": ref.flow, "job": ref.job, "file": self._file_of(ref.job), "row": o.row,
                "numbers": list(o.numbers), "status": Status.ACCEPTED.value, "accepted_at": now,
                "expires_at": self.store.expiry(now)}


__all__ = ["ChunkMessage", "ChunkOutcome", "ChunkRef", "Decision", "DispatchService", "Done", "Fate", "HandBack",
           "Poison", "RetryAfter", "RowOutcome", "Verdict"]
