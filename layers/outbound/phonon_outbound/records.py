"""The records that travel between the services, typed, each defined in one place.

- the row reference `<job>.<row>`: the value of the correlation key every call carries
  (`$flow.key.OutboundRef`), the owner of a dedupe claim, the `ref` a flow-end push echoes
  back. `row_ref` builds it and `parse_row_ref` splits it; nothing else does either.
- `Job`: a file job's META item in the state table (docs/design.md, "state table"), read.
- `JobStatus`: the job's own lifecycle (not a row's status: those are `status.Status`).
- `ResultItem`: the results table's item for a call Phonon accepted.
- `ChunkMessage` / `ChunkRef`: the SQS chunk message (docs/design.md, "the chunk message"),
  v2 as ingest writes it and v1 as a hand-written event may give it.

Why two kinds of model: where input is untrusted and must be parsed and validated — an SQS
body, which anyone with access to the queue (or a redrive of an old message) can put there —
the model is pydantic (`ChunkMessage`), so a bad message is refused with a field-level reason
and never half-read. Our own records, which only our code writes and reads back from DynamoDB
(`Job`, `ResultItem`), are frozen dataclasses: no validation cost on every read of a job item
(it is read once per chunk and per webhook), nothing to refuse, and `from_item` states the one
conversion from a DynamoDB item, defaults included. `ChunkRef` stays a dataclass: it is the
lenient reading of a message `ChunkMessage` refused, built by hand so that it never raises.

This module imports no service (the webhook Lambda imports it and must not load ingest or
dispatch; tests/unit/test_handler_imports.py).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from .status import Status
from .store.common import read_cap

MAX_JOB_ID_CHARS = 128
MAX_ROW_DIGITS = 12


# ------------------------------------------------------------------------------ row reference
def row_ref(job: str, row: int) -> str:
    """`<job>.<row>`: one row of one job. Job ids may contain dots (the row is after the last)."""
    return f"{job}.{row}"


def chunk_message_group(job: str) -> str:
    """The MessageGroupId of a job's chunk messages, on both lanes (ingest's sends, dispatch's
    hand-backs): the job id, so SQS serves the jobs sharing a queue fairly (chunking.py, lanes)."""
    return job


def parse_row_ref(text: Any) -> tuple[str, int] | None:
    """(job, row) from `<job>.<row>`; None when it is not one: not a string, no dot, an empty
    job, or a row that is not 1 to 12 ASCII digits (rows are numbered from 1)."""
    if not isinstance(text, str):
        return None
    job, dot, row = text.rpartition(".")
    if not (dot and job and row.isascii() and row.isdigit() and len(row) <= MAX_ROW_DIGITS):
        return None
    number = int(row)
    return (job, number) if number >= 1 else None


# ------------------------------------------------------------------------------ the job item
class Origin(StrEnum):
    """How a job's request arrived (the job item's `origin`; a file upload: s3). The intake
    (intake.py) writes the others; events out (events_out.py) reports it as the job's source."""

    S3 = "s3"
    EVENTBRIDGE = "eventbridge"
    SQS = "sqs"
    STEPFUNCTIONS = "stepfunctions"


def _origin(value: Any) -> Origin:
    """A stored origin; an unknown or missing one is an uploaded file's (jobs before the intake)."""
    return Origin(value) if value in set(Origin) else Origin.S3


class JobStatus(StrEnum):
    """A file job's `status` attribute: VALIDATING → INGESTING → DISPATCHING → one of the last four."""

    VALIDATING = "VALIDATING"    # created; the validation pre-pass is reading the file
    INGESTING = "INGESTING"      # valid, flow known; rows are being queued
    DISPATCHING = "DISPATCHING"  # every chunk queued (or the rest cancelled); waiting for them to settle
    COMPLETED = "COMPLETED"      # report written
    REJECTED = "REJECTED"        # the whole file was refused (`error`); report written
    FAILED = "FAILED"            # the job failed as a whole (`failure`); report written
    CANCELLED = "CANCELLED"      # cancelled (`cancelled_reason`); report written


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Job:
    """A file job's META item as the code reads it. Every attribute has a default (an item
    written by an older version, or a stub, may lack any of them); attributes not named here
    (the DynamoDB keys, anything newer) are ignored."""

    id: str = ""  # from `pk` (JOB#<id>) when the item has it
    bucket: str = ""
    key: str = ""
    version: str = ""
    etag: str = ""
    size: int = 0
    created_at: int | None = None  # epoch seconds
    uploaded_at: str = ""  # ISO 8601, the event's time of the upload
    report_csv_key: str = ""
    report_summary_key: str = ""
    status: str = ""  # a JobStatus value
    flow: str = ""
    flow_source: str = ""
    row_count: int = 0  # rows the validation pre-pass counted
    checkpoint_row: int = 0
    rows_queued: int = 0  # valid rows put on the chunk queue so far (written with the checkpoint)
    next_chunk: int = 0
    prepass_pauses: int = 0
    ingest_done: bool = False
    total_rows: int = 0
    chunks_total: int | None = None  # known once ingest is done
    chunks_settled: int = 0
    accepted: int = 0  # rows of settled chunks so far, per status (the local run's progress)
    failed: int = 0
    duplicate: int = 0
    cancelled: int = 0
    api_requests: int = 0  # requests Phonon answered
    api_attempts: int = 0  # requests started
    completed: bool = False
    active_shard: str = ""  # "A" while not completed (the active-jobs index)
    updated_at: int = 0
    cancelled_reason: str = ""
    missing_reason: str = ""
    error: str = ""  # a whole-file rejection's reason
    failure: str = ""  # the job failed as a whole
    notes: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)  # per status, written on completion
    # reason, opens (UTC ISO), since (epoch s): a chunk waited for the calling window (windows.py)
    window_wait: Mapping[str, str | int] = field(default_factory=dict)
    # the store's own bookkeeping (store.ledger.count_settled, store.jobs.claim_finalize, retention)
    settled_below: int = 0
    settled_set: frozenset[int] = frozenset()
    finalizing: int = 0
    expires_at: int = 0
    # where the job's request came from (docs/events-in.md): "s3" for an uploaded file, else
    # eventbridge | sqs | stepfunctions, with the request's id, the caller's reference and a
    # Step Functions task token (never logged)
    origin: Origin = Origin.S3
    request_id: str = ""
    reference: str = ""
    task_token: str = ""
    # issue 12 (docs/operating.md): pause (reason, "" = running), flow-end outcomes arrived so
    # far, the report function's bookkeeping (last write, next allowed write, final written),
    # the dispatch lane the job's chunks go to ("" = the chunk queue, "express" = small jobs)
    paused_reason: str = ""
    outcomes: int = 0
    report_written_at: int = 0
    report_next_at: int = 0
    report_final: bool = False
    lane: str = ""
    rate_cap: int | None = None  # calls per minute an operator capped the job at (control.py, `limit`)

    @property
    def all_outcomes_in(self) -> bool:
        """Every ACCEPTED row has its outcome: the `outcomes` counter (the webhook counts the
        first outcome of an ACCEPTED row only) reaches the accepted rows. The report sweep asks
        for a write then; the write itself, and the reconciler, go by the rows (the counter can
        run ahead of them: a push counted before its chunk settled)."""
        return self.outcomes >= int(self.counts.get("accepted", self.accepted))

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> Job:
        """The job from its item (as `store.jobs.get_job` returns it); an empty job for None."""
        item = item or {}
        pk = _str(item.get("pk"))
        created = item.get("created_at")
        total = item.get("chunks_total")
        return cls(
            id=pk[len("JOB#"):] if pk.startswith("JOB#") else "",
            bucket=_str(item.get("bucket")), key=_str(item.get("key")), version=_str(item.get("version")),
            etag=_str(item.get("etag")), size=_int(item.get("size")),
            created_at=None if created in (None, "") else _int(created),
            uploaded_at=_str(item.get("uploaded_at")),
            report_csv_key=_str(item.get("report_csv_key")), report_summary_key=_str(item.get("report_summary_key")),
            status=_str(item.get("status")), flow=_str(item.get("flow")), flow_source=_str(item.get("flow_source")),
            row_count=_int(item.get("row_count")), checkpoint_row=_int(item.get("checkpoint_row")),
            rows_queued=_int(item.get("rows_queued")),
            next_chunk=_int(item.get("next_chunk")), prepass_pauses=_int(item.get("prepass_pauses")),
            ingest_done=bool(item.get("ingest_done")), total_rows=_int(item.get("total_rows")),
            chunks_total=None if total is None else _int(total), chunks_settled=_int(item.get("chunks_settled")),
            accepted=_int(item.get("accepted")), failed=_int(item.get("failed")),
            duplicate=_int(item.get("duplicate")), cancelled=_int(item.get("cancelled")),
            api_requests=_int(item.get("api_requests")), api_attempts=_int(item.get("api_attempts")),
            completed=bool(item.get("completed")),
            active_shard=_str(item.get("active_shard")), updated_at=_int(item.get("updated_at")),
            cancelled_reason=_str(item.get("cancelled_reason")), missing_reason=_str(item.get("missing_reason")),
            error=_str(item.get("error")), failure=_str(item.get("failure")),
            notes=tuple(str(n) for n in item.get("notes") or ()),
            counts={str(k): _int(v) for k, v in (item.get("counts") or {}).items()},
            window_wait={str(k): _int(v) if k == "since" else _str(v) for k, v in (item.get("window_wait") or {}).items()},
            settled_below=_int(item.get("settled_below")),
            settled_set=frozenset(_int(c) for c in item.get("settled_set") or ()),
            finalizing=_int(item.get("finalizing")), expires_at=_int(item.get("expires_at")),
            origin=_origin(item.get("origin")), request_id=_str(item.get("request_id")),
            reference=_str(item.get("reference")), task_token=_str(item.get("task_token")),
            paused_reason=_str(item.get("paused_reason")), outcomes=_int(item.get("outcomes")),
            report_written_at=_int(item.get("report_written_at")), report_next_at=_int(item.get("report_next_at")),
            report_final=bool(item.get("report_final")), lane=_str(item.get("lane")),
            rate_cap=read_cap(item.get("rate_cap")),
        )

    @property
    def all_chunks_settled(self) -> bool:
        """Ingest is done and every chunk it queued has settled: the report is owed."""
        return self.ingest_done and self.chunks_settled >= (self.chunks_total or 0)

    @property
    def rejected(self) -> bool:
        """The whole file was refused: its report has no rows."""
        return self.status == JobStatus.REJECTED


# ------------------------------------------------------------------------------ results table
@dataclass(frozen=True, slots=True)
class ResultItem:
    """The results table's item for one call Phonon accepted, keyed by its phonon-uuid, as
    dispatch writes it when the answer names the uuid (the flow-end webhook adds its outcome
    to the same item later; docs/webhook.md)."""

    phonon_uuid: str
    cid: str
    request_id: str
    flow: str
    job: str
    file: str
    row: int
    numbers: list[str]
    accepted_at: int
    expires_at: int
    status: Status = Status.ACCEPTED

    def to_item(self) -> dict[str, Any]:
        return {"phonon-uuid": self.phonon_uuid, "client-identifier": self.cid, "request-id": self.request_id,
                "flow-id": self.flow, "job": self.job, "file": self.file, "row": self.row,
                "numbers": list(self.numbers), "status": self.status.value, "accepted_at": self.accepted_at,
                "expires_at": self.expires_at}


# ------------------------------------------------------------------------------ chunk messages
class PoisonMessage(Exception):
    """A message that can never be processed (not our format)."""


def encode_calls(calls_json: bytes) -> str:
    """`calls_gz`: the calls' JSON bytes gzip-compressed (level 1, no timestamp, so the same
    calls always give the same text) and base64-encoded."""
    return base64.b64encode(gzip.compress(calls_json, compresslevel=1, mtime=0)).decode()


def decode_calls(text: str) -> Any:
    """The calls JSON in `calls_gz`; PoisonMessage when it is not base64 of gzip of JSON."""
    try:
        return json.loads(gzip.decompress(base64.b64decode(text, validate=True)))
    except (ValueError, OSError, EOFError, binascii.Error) as err:  # bad base64 / gzip / JSON
        raise PoisonMessage(f"calls_gz cannot be decoded: {type(err).__name__}") from None


def _keys(call: dict) -> list:
    keys = call.get("keys", [])
    if not isinstance(keys, list):
        raise PoisonMessage("a call's keys are not a list")
    return keys


class ChunkMessage(BaseModel):
    """v2 (what ingest writes): `calls_gz` = base64(gzip(calls JSON)), correlation key included.
    v1 (hand-written, e.g. events/sqs-chunk-batch.json): plain `calls` without the correlation
    key, which the dispatcher adds. Never a security-id."""

    v: int = 1
    job: str = Field(min_length=1, max_length=MAX_JOB_ID_CHARS)
    flow: str = Field(min_length=1)
    chunk: int = Field(ge=0)
    rows: list[int]
    calls: list[dict] = Field(default_factory=list)
    calls_gz: str | None = None
    warn: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def pack(cls, job: str, flow: str, chunk: int, rows: list[int], calls_json: bytes,
             warn: Mapping[str, str] | None = None) -> ChunkMessage:
        """The v2 message of one chunk: `calls_json` is the calls' JSON exactly as the chunker
        measured it, so decompressing gives back the very bytes of the request body's calls."""
        return cls(v=2, job=job, flow=flow, chunk=chunk, rows=list(rows), calls_gz=encode_calls(calls_json),
                   warn=dict(warn or {}))

    def to_json(self) -> str:
        """The SQS body: compact JSON, fields in declaration order, empty or unset ones left out
        (`{"v":2,"job":…,"flow":…,"chunk":…,"rows":[…],"calls_gz":…}` plus `warn` when a row has one)."""
        doc: dict[str, Any] = {"v": self.v, "job": self.job, "flow": self.flow, "chunk": self.chunk, "rows": self.rows}
        if self.calls:
            doc["calls"] = self.calls
        if self.calls_gz is not None:
            doc["calls_gz"] = self.calls_gz
        if self.warn:
            doc["warn"] = self.warn
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    def complete_calls(self, correlation_name: str) -> list[dict]:
        """The calls to send; PoisonMessage when they cannot be decoded into a list of call
        objects, one per row."""
        if self.calls_gz is not None:
            calls = decode_calls(self.calls_gz)
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise PoisonMessage("calls_gz does not decode to a list of call objects")
        else:
            if len(self.rows) != len(self.calls):
                raise PoisonMessage("chunk message has a different number of rows and calls")
            calls = [{**call, "keys": [*_keys(call), {"name": correlation_name, "value": row_ref(self.job, row)}]}
                     for row, call in zip(self.rows, self.calls, strict=True)]
        if len(self.rows) != len(calls) or not calls:
            raise PoisonMessage("chunk message has a different number of rows and calls")
        return calls


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ChunkRef:
    """What a chunk message says about itself, as far as it can be read: enough to settle its
    rows without sending them. `calls` is empty (or shorter than `rows`) when they are unreadable."""

    job: str
    chunk: int
    flow: str
    rows: list[int]
    calls: list[dict] = field(default_factory=list)

    @staticmethod
    def parse(body: str, correlation_name: str = "") -> ChunkRef | None:
        """Leniently: None unless the job, the chunk number and a list of row numbers are there."""
        try:
            data = json.loads(body)
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        job, chunk, rows, flow = data.get("job"), data.get("chunk"), data.get("rows"), data.get("flow")
        if not (isinstance(job, str) and 0 < len(job) <= MAX_JOB_ID_CHARS and isinstance(chunk, int)
                and _plain_int(chunk) and chunk >= 0
                and isinstance(rows, list) and rows and all(_plain_int(r) and r > 0 for r in rows)):
            return None
        calls: list = []
        try:
            raw = decode_calls(data["calls_gz"]) if isinstance(data.get("calls_gz"), str) else data.get("calls")
        except PoisonMessage:
            raw = None
        if isinstance(raw, list) and len(raw) == len(rows):
            calls = [c if isinstance(c, dict) else {} for c in raw]
        return ChunkRef(job, chunk, flow if isinstance(flow, str) else "", list(rows), calls)


__all__ = ["MAX_JOB_ID_CHARS", "ChunkMessage", "ChunkRef", "Job", "JobStatus", "PoisonMessage",
           "ResultItem", "chunk_message_group", "decode_calls", "encode_calls", "parse_row_ref", "row_ref"]
