"""Dispatch: one chunk message → (dedupe, rate limit) → one API request → every row's outcome.

Never a second call for the same customer:
- the chunk ledger (`Store.claim_chunk`) lets one dispatcher at a time hold a chunk and drops
  redeliveries of a settled chunk;
- the request body is a pure function of the message (and the flow's security-id), so every
  resend is byte-identical and Phonon's checksum check answers 201 instead of calling again;
  a 201 on our resend therefore means "accepted earlier" and is recorded as such;
- dedupe claims (`Store.claim_dedupe`) stop the same call arriving again from another file.

Waiting never kills a message: rate-limit waits and an open circuit breaker re-queue a copy
of the message with a delay (a fresh receive count) instead of failing it. Only answers that
may succeed later (5xx, 206, timeouts, unknown answers) are retried through the visibility
timeout with exponential backoff and land in the DLQ after `max_receive_count` attempts, with
their rows FAILED and the reason recorded.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .api.body import build_body
from .api.classify import Kind, Verdict, classify
from .api.client import PhononClient
from .flows import FlowSecrets, UnknownFlow
from .jobs import JobFinisher
from .limiter import CircuitBreaker, RateLimiter
from .observability import count, logger
from .settings import Settings
from .store import Store

LOCK_BUSY_DELAY_S = 5.0


class ChunkMessage(BaseModel):
    """v2 (what ingest writes): `calls_gz` = base64(gzip(calls JSON)), correlation key included.
    v1 (hand-written, e.g. events/sqs-chunk-batch.json): plain `calls` without the correlation
    key, which the dispatcher adds."""

    v: int = 1
    job: str = Field(min_length=1)
    flow: str = Field(min_length=1)
    chunk: int = Field(ge=0)
    rows: list[int]
    calls: list[dict] = Field(default_factory=list)
    calls_gz: str | None = None
    warn: dict[str, str] = Field(default_factory=dict)

    def complete_calls(self, correlation_name: str) -> list[dict]:
        if self.calls_gz is not None:
            return json.loads(gzip.decompress(base64.b64decode(self.calls_gz)))
        return [{**call, "keys": [*call.get("keys", []), {"name": correlation_name, "value": f"{self.job}.{row}"}]}
                for row, call in zip(self.rows, self.calls, strict=True)]


class RetryLater(Exception):
    """Give the message back through its visibility timeout (counts as an attempt)."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


class Exhausted(RetryLater):
    """The last attempt failed: rows are FAILED and recorded; SQS moves the message to the DLQ."""


class PoisonMessage(Exception):
    """A message that can never be processed (not our format): it goes to the DLQ."""


@dataclass
class Outcome:
    """What happened to one chunk in this invocation."""

    status: str  # settled | waiting | duplicate-delivery
    accepted: int = 0
    failed: int = 0
    duplicate: int = 0
    requests: int = 0
    reason: str = ""
    rows: dict[int, dict] = field(default_factory=dict)


def dedupe_hash(flow: str, call: dict, correlation_name: str) -> str:
    """Same flow, client-identifier, numbers, start-time and keys (without our own
    correlation key, which differs per file) → same hash."""
    keys = [k for k in call.get("keys", []) if k.get("name") != correlation_name]
    ident = {"flow": flow, "cid": call.get("client-identifier"), "numbers": call.get("contact-numbers"),
             "start": call.get("start-time"), "keys": keys}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter' (half fixed, half random)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class DispatchService:
    def __init__(self, settings: Settings, store: Store, client: Callable[[], PhononClient], secrets: FlowSecrets,
                 finisher: JobFinisher, requeue: Callable[[str, float], None],
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.s = settings
        self.store = store
        self._client_factory = client  # PhononClient is not thread-safe: one per worker thread
        self._local = threading.local()
        self.secrets = secrets
        self.finisher = finisher
        self.requeue = requeue
        self.clock = clock
        self.sleep = sleep
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

    # ------------------------------------------------------------------ entry point
    def handle(self, body: str, receive_count: int, remaining_s: Callable[[], float]) -> Outcome:
        try:
            msg = ChunkMessage.model_validate_json(body)
            calls = msg.complete_calls(self.correlation_name)
        except ValidationError as err:
            raise PoisonMessage(f"not a chunk message: {err.error_count()} validation errors") from None
        except (ValueError, OSError, EOFError) as err:  # bad base64 / gzip / JSON
            raise PoisonMessage(f"chunk message calls cannot be decoded: {type(err).__name__}") from None
        if len(msg.rows) != len(calls) or not all(isinstance(c, dict) for c in calls):
            raise PoisonMessage("chunk message has a different number of rows and calls")

        breaker = CircuitBreaker(self.store, msg.flow, self.s.breaker_open_s, self.clock)
        state = breaker.check()
        if not state.allow:
            self.requeue(body, state.wait_s)
            return Outcome("waiting", reason=f"flow {msg.flow} paused: {state.reason}")

        if receive_count > self.s.max_receive_count:
            # Settled FAILED on its last attempt already; SQS has not moved it to the DLQ yet
            # (its maxReceiveCount is higher than ours): do not send again, let it go there.
            raise Exhausted(0, f"retries exhausted ({receive_count - 1} attempts)")
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

        try:
            outcome = self._dispatch(msg, calls, receive_count, remaining_s, breaker, state.probe)
        except Exhausted:
            raise
        except RetryLater:
            self.store.note_chunk(msg.job, msg.chunk, state="RETRY", lease_until=0)
            raise
        except _HandBack as hb:
            self.store.note_chunk(msg.job, msg.chunk, state="WAITING", lease_until=0)
            self.requeue(body, hb.delay_s)
            return Outcome("waiting", reason=hb.reason)
        return outcome

    # ------------------------------------------------------------------ the work
    def _dispatch(self, msg: ChunkMessage, calls: list[dict], receive_count: int, remaining_s: Callable[[], float],
                  breaker: CircuitBreaker, probe: bool) -> Outcome:
        out = Outcome("settled")
        rows = list(msg.rows)

        # Dedupe across files, decided once per chunk and identically on every retry.
        claims: dict[int, tuple[str, str]] = {}
        if self.s.dedupe_window_hours > 0:
            for row, call in zip(rows, calls, strict=True):
                claims[row] = (dedupe_hash(msg.flow, call, self.correlation_name), f"{msg.job}.{row}")
            try:
                conflicts = self.store.claim_dedupe(msg.flow, list(claims.values()),
                                                    self.s.dedupe_window_hours * 3600, self.clock())
            except TimeoutError as err:  # the flow's dedupe lock stayed busy; nothing was sent
                raise _HandBack(LOCK_BUSY_DELAY_S, str(err)) from None
            if conflicts:
                keep_calls, keep_rows = [], []
                for row, call in zip(rows, calls, strict=True):
                    other = conflicts.get(claims[row][0])
                    if other is None:
                        keep_calls.append(call)
                        keep_rows.append(row)
                    else:
                        out.rows[row] = self._row(call, "DUPLICATE", reason=self._duplicate_reason(other))
                        out.duplicate += 1
                calls, rows = keep_calls, keep_rows

        if calls:
            try:
                security_id = self.secrets.security_id(msg.flow)
            except UnknownFlow as err:
                for row, call in zip(rows, calls, strict=True):
                    out.rows[row] = self._row(call, "FAILED", reason=err.reason)
                    out.failed += 1
                calls, rows = [], []
            else:
                self._send(msg, calls, rows, security_id, receive_count, remaining_s, breaker, probe, out, top=True)

        self._record(msg, out, claims)
        return out

    def _send(self, msg: ChunkMessage, calls: list[dict], rows: list[int], security_id: str, receive_count: int,
              remaining_s: Callable[[], float], breaker: CircuitBreaker, probe: bool, out: Outcome, top: bool) -> None:
        max_wait = max(0.0, min(self.s.dispatch_max_wait_s, remaining_s() - self.s.api_read_timeout_s - 5))
        granted, wait = self._reserve(len(calls), max_wait)
        if not granted:  # `wait`: when to come back
            if top and not out.requests:
                raise _HandBack(wait, "waiting for the rate limit")
            raise RetryLater(wait, "waiting for the rate limit while splitting a chunk")
        if wait > 0:
            self.sleep(wait)

        body = build_body(security_id, msg.flow, calls)
        answer = self.client.post(body)
        out.requests += 1
        self.store.add_to_job(msg.job, api_requests=1)
        verdict = classify(answer, on_retry=receive_count > 1)
        count(f"Api{verdict.kind.name.title().replace('_', '')}")
        if probe and verdict.kind is not Kind.ACCOUNT:
            breaker.close()
            probe = False

        kind = verdict.kind
        if kind is Kind.ACCEPTED or kind is Kind.ALREADY_ACCEPTED:
            note = "" if kind is Kind.ACCEPTED else (
                "accepted by an earlier attempt: Phonon answered 201 Checksum Repeated to the identical resend")
            for row, call in zip(rows, calls, strict=True):
                uuid = verdict.accepted_ids.get(str(call["client-identifier"]), "")
                reason = "; ".join(x for x in (msg.warn.get(str(row), ""), note) if x)
                out.rows[row] = self._row(call, "ACCEPTED", request_id=verdict.request_id, uuid=uuid, reason=reason)
                out.accepted += 1
        elif kind is Kind.PARTIAL:
            for row, call in zip(rows, calls, strict=True):
                uuid = verdict.accepted_ids.get(str(call["client-identifier"]))
                if uuid:
                    out.rows[row] = self._row(call, "ACCEPTED", request_id=verdict.request_id, uuid=uuid,
                                              reason=msg.warn.get(str(row), ""))
                    out.accepted += 1
                else:
                    out.rows[row] = self._row(call, "FAILED", request_id=verdict.request_id,
                                              reason=f"{verdict.reason}; this call was not among the accepted ones")
                    out.failed += 1
        elif kind in (Kind.RECORD, Kind.TOO_LARGE) and len(calls) > 1:
            # Find the offending calls by bisection; every sub-body is deterministic too.
            half = len(calls) // 2
            for part_calls, part_rows in ((calls[:half], rows[:half]), (calls[half:], rows[half:])):
                self._send(msg, part_calls, part_rows, security_id, receive_count, remaining_s, breaker, probe,
                           out, top=False)
        elif kind in (Kind.RECORD, Kind.TOO_LARGE, Kind.FLOW, Kind.PERMANENT):
            for row, call in zip(rows, calls, strict=True):
                out.rows[row] = self._row(call, "FAILED", reason=verdict.reason)
                out.failed += 1
        elif kind is Kind.ACCOUNT:
            breaker.trip(verdict.reason, verdict.code)
            count("AccountRefusals", 1)
            logger.error("account-level refusal: sending paused for the flow",
                         extra={"flow": msg.flow, "reason": verdict.reason})
            raise _HandBack(self.s.breaker_open_s, verdict.reason)
        elif kind is Kind.RATE_LIMITED:
            self.records_limiter.penalize()
            delay = max(1.0, verdict.retry_after_s or 5.0)
            if top and out.requests == 1:
                raise _HandBack(delay, verdict.reason)
            raise RetryLater(delay, verdict.reason)
        else:  # TRANSIENT, UNKNOWN: keep the message, never call it a success
            if receive_count >= self.s.max_receive_count:
                reason = f"retries exhausted after {receive_count} attempts: {verdict.reason}"
                for row, call in zip(rows, calls, strict=True):
                    out.rows[row] = self._row(call, "FAILED", reason=reason)
                    out.failed += 1
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

    # ------------------------------------------------------------------ recording
    def _row(self, call: dict, status: str, request_id: str | None = None, uuid: str | None = None,
             reason: str = "") -> dict:
        return {"status": status, "cid": str(call.get("client-identifier", "")), "request_id": request_id or "",
                "phonon_uuid": uuid or "", "reason": reason, "numbers": list(call.get("contact-numbers", []))}

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

    def _record(self, msg: ChunkMessage, out: Outcome, claims: dict[int, tuple[str, str]]) -> None:
        now = int(self.clock())
        self.store.put_outcomes(msg.job, msg.chunk, [{"row": row, **item} for row, item in out.rows.items()], now)
        results = []
        for row, item in out.rows.items():
            if item["status"] == "ACCEPTED" and item["phonon_uuid"]:
                results.append(self._result_item(msg, row, item, now))
        if results:
            self.store.put_results(results)
        failed = [claims[row] for row, item in out.rows.items() if item["status"] == "FAILED" and row in claims]
        if failed:
            self.store.release_dedupe(msg.flow, failed)
        state = "FAILED" if out.status == "exhausted" else "DONE"
        self.store.settle_chunk(msg.job, msg.chunk, state, accepted=out.accepted, failed=out.failed,
                                duplicate=out.duplicate, requests=out.requests)
        count("CallsAccepted", out.accepted)
        count("CallsFailed", out.failed)
        count("CallsDuplicate", out.duplicate)
        first, meta = self.store.count_settled(msg.job, msg.chunk, accepted=out.accepted, failed=out.failed,
                                               duplicate=out.duplicate)
        if first or not meta.get("completed"):
            self.finisher.maybe_finalize(msg.job, meta)
        else:  # a redriven chunk settled again: refresh the report that was already written
            self.finisher.finalize(msg.job, force=True)
        if out.status == "exhausted":
            raise Exhausted(0, out.reason)  # to the DLQ: this was the last receive

    def _result_item(self, msg: ChunkMessage, row: int, item: dict, now: int) -> dict:
        return {"phonon-uuid": item["phonon_uuid"], "client-identifier": item["cid"],
                "request-id": item["request_id"], "flow-id": msg.flow, "job": msg.job, "file": self._file_of(msg.job),
                "row": row,
                "numbers": item["numbers"], "status": "ACCEPTED", "accepted_at": now}


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


__all__ = ["ChunkMessage", "DispatchService", "Outcome", "Exhausted", "PoisonMessage", "RetryLater", "Verdict", "requeue_with"]
