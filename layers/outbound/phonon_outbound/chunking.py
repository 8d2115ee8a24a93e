"""Packing calls into chunks that are each exactly one API request's worth of calls.

A chunk holds at most ``batch_size`` calls and its request body -- as built by
:func:`build_body`, security-id included -- is at most ``max_body_bytes`` (256 KiB: Phonon
silently drops larger bodies, docs/phonon-api.md). The size is computed incrementally from each
call's own serialization, never by re-serializing the chunk:

    len(build_body(sid, flow, calls)) == overhead(len(sid), flow) + sum(len(serialize_call(c))) + (n - 1)

because ``json.dumps`` with fixed separators writes a nested object exactly as it writes the
object alone, and the calls are joined by one comma each. ``security_id_len`` is the length of
the security-id, which is 64 alphanumeric characters and so needs no JSON escaping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .api.body import build_body

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "MAX_BODY_BYTES",
    "SECURITY_ID_LEN",
    "EXPRESS",
    "CallTooLarge",
    "Chunk",
    "Chunker",
    "body_overhead",
    "build_body",
    "lane_for",
    "queue_for",
    "serialize_call",
]

MAX_BODY_BYTES = 256 * 1024
# A flow's security-id is 64 alphanumeric characters (docs/phonon-api.md). Ingest
# never reads it (it only checks that the flow's secret exists): chunks are sized for this
# length, and dispatch refuses a body that would still come out over the limit.
SECURITY_ID_LEN = 64

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
try:  # the C encoder, called directly: the same bytes as json.dumps, without its per-call set-up
    from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]  # private, untyped
    from json.encoder import encode_basestring as _encode_basestring

    _c_encode = _c_make_encoder(None, _ENCODER.default, _encode_basestring, None, ":", ",", False, False, True)
except ImportError:  # pragma: no cover - interpreters without the _json accelerator
    _c_encode = None


def serialize_call(call: dict) -> bytes:
    """A call exactly as it appears inside a request body (compact JSON, UTF-8)."""
    if _c_encode is not None:
        return "".join(_c_encode(call, 0)).encode("utf-8")
    return _ENCODER.encode(call).encode("utf-8")


def body_overhead(security_id_len: int, flow_id: str) -> int:
    """Bytes of a body with an empty call list, for a security-id of that many ASCII characters."""
    return len(build_body("x" * security_id_len, flow_id, []))


class CallTooLarge(ValueError):
    """One call alone does not fit in a request body: the ingest reports its row as REJECTED."""

    def __init__(self, row: int, size: int, limit: int) -> None:
        self.row = row
        self.size = size
        self.limit = limit
        self.reason = (f"the call is too large to send: {size:,} bytes in a request body, over the API's "
                       f"limit of {limit:,} bytes (shorten its keys' values)")
        super().__init__(self.reason)


@dataclass(slots=True)
class Chunk:
    rows: list[int]
    calls: list[dict]
    body_bytes: int  # == len(build_body(security_id, flow_id, calls))
    calls_json: bytes = field(default=b"[]", repr=False)  # == serialize_call(calls): reuse, don't re-serialize


class Chunker:
    """``add(row, call)`` returns the chunks it completed (usually none); ``flush()`` the rest.

    A chunk is completed as soon as it holds ``batch_size`` calls, or when the next call would
    push its body over ``max_body_bytes``. Calls keep their order; rows are the file's row
    numbers of the calls, in the same order.
    """

    def __init__(self, batch_size: int, security_id_len: int = SECURITY_ID_LEN, *, flow_id: str,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.overhead = body_overhead(security_id_len, flow_id)
        if self.overhead >= max_body_bytes:
            raise ValueError("max_body_bytes leaves no room for calls")
        self._rows: list[int] = []
        self._calls: list[dict] = []
        self._parts: list[bytes] = []
        self._size = self.overhead  # body bytes of the open chunk

    def add(self, row: int, call: dict) -> list[Chunk]:
        part = serialize_call(call)
        n = len(part)
        if self.overhead + n > self.max_body_bytes:
            raise CallTooLarge(row, self.overhead + n, self.max_body_bytes)
        done: list[Chunk] = []
        if self._calls and self._size + 1 + n > self.max_body_bytes:
            done.append(self._close())
        self._size += n + 1 if self._calls else n
        self._rows.append(row)
        self._calls.append(call)
        self._parts.append(part)
        if len(self._calls) >= self.batch_size:
            done.append(self._close())
        return done

    def flush(self) -> list[Chunk]:
        return [self._close()] if self._calls else []

    @property
    def pending(self) -> int:
        """Calls added but not yet in a returned chunk."""
        return len(self._calls)

    @property
    def pending_rows(self) -> list[int]:
        """Rows of the calls added but not yet in a returned chunk (a copy)."""
        return list(self._rows)

    def _close(self) -> Chunk:
        chunk = Chunk(self._rows, self._calls, self._size, b"[" + b",".join(self._parts) + b"]")
        self._rows, self._calls, self._parts = [], [], []
        self._size = self.overhead
        return chunk


# ---------------------------------------------------------------------------- lanes (fair share)
# Why an express lane (docs/operating.md, "Fair share between jobs"): chunks of every job share
# one queue and one global rate limit, so a 200-row file dropped behind a 100,000-row campaign
# waited for the campaign's whole backlog (3+ minutes at 30,000/min). A job whose file has at
# most `express_max_rows` rows (the validation pre-pass counts them before any chunk is queued)
# sends its chunks to a second queue, the ExpressQueue; the dispatch function has an SQS event
# source on each queue, and on AWS each event source polls on its own, so a small job's chunk
# gets a dispatcher at once instead of after the backlog. The rate limiter stays global: the
# total never exceeds the limit, and the big job gives up exactly the calls the small one made.
# Chosen over SQS fair queues alone (they reorder what a poller receives, but a poller busy
# with a batch of big chunks receives nothing new until it is done, and moto does not model
# them, so they cannot be measured here) and over per-job scheduling inside dispatch (a
# dispatcher sees only the batch it was given). Chunk messages still carry
# MessageGroupId = job id on both queues: SQS treats a standard queue whose messages carry one
# as a fair queue (no queue setting), so on AWS jobs that share a lane are also served fairly.
EXPRESS = "express"


def lane_for(row_count: int, settings: Settings) -> str:
    """The lane of a job whose file has `row_count` rows: "express" when it is small and an
    express queue is configured, else "" (the chunk queue)."""
    if settings.express_queue_url and 0 < row_count <= settings.express_max_rows:
        return EXPRESS
    return ""


def queue_for(lane: str, settings: Settings) -> str:
    """The queue URL of a lane (an unknown lane, or no express queue: the chunk queue)."""
    if lane == EXPRESS and settings.express_queue_url:
        return settings.express_queue_url
    return settings.chunk_queue_url
