"""Requests to place calls that arrive as events (docs/events-in.md).

Three ways in, one outcome: an EventBridge event (detail-type `Outbound Calls Requested`), a
message on the intake SQS queue (body = the same detail), or a Step Functions task that sends
such a message with its task token. Each request becomes one JSON contact file,
`incoming/requests/<origin>/<request id>.json`, written once (`IfNoneMatch="*"`): from there the
ordinary ingest pipeline validates, dedupes, chunks, sends, reports and announces it, exactly
as for an uploaded file. The request's identity travels as S3 user metadata, which ingest
copies onto the job (`phonon-origin`, `phonon-request-id`, `phonon-reference`,
`phonon-task-token`).

A request that cannot become a file at all (not JSON, not an object, no calls, more than
MAX_CALLS calls, a reference or task token S3 metadata cannot carry) is rejected here as a
whole: `rejected(origin, request_id, reference, task_token, reason)` is called (publishing the
rejection and answering a task token), and an SQS message fails (to the intake DLQ).
Reasons name the field and the problem, never a value; calls are never logged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .observability import logger
from .records import Origin

DETAIL_TYPE = "Outbound Calls Requested"
PREFIX = "incoming/requests/"
MAX_CALLS = 10_000
MAX_REFERENCE = 256
MAX_TASK_TOKEN = 1024
ORIGINS = tuple(o.value for o in Origin if o is not Origin.S3)  # the ways in that write a request file
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")

Rejecter = Callable[[str, str, str, str, str], None]


class Detail(BaseModel):
    """An event's `detail` / a message's body. A call is any JSON value: each is a row of the
    contact file, validated by ingest (a bad call is that row REJECTED, the others go on)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    flow_id: str | None = Field(None, alias="flow-id", max_length=64)
    reference: str | None = Field(None, max_length=MAX_REFERENCE, pattern=_PRINTABLE_ASCII.pattern)
    request_id: str | None = Field(None, alias="request-id", max_length=1024)
    task_token: str | None = Field(None, alias="task-token", min_length=1, max_length=MAX_TASK_TOKEN,
                                   pattern=r"^[\x21-\x7e]+$")
    calls: list[Any] | None = None
    call: Any = None

    @model_validator(mode="before")
    @classmethod
    def _calls_or_call(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the request must be a JSON object")
        calls, call = data.get("calls"), data.get("call")
        if calls is not None and call is not None:
            raise ValueError("give either 'calls' or 'call', not both")
        if calls is None and call is None:
            raise ValueError("no calls: give 'calls' (a list) or 'call' (one call)")
        if calls is not None and not isinstance(calls, list):
            raise ValueError("'calls' must be a list")
        if isinstance(calls, list) and not calls:
            raise ValueError("no calls: 'calls' is empty")
        if isinstance(calls, list) and len(calls) > MAX_CALLS:
            raise ValueError(f"too many calls: {len(calls):,} (at most {MAX_CALLS:,} per request)")
        if call is not None and not isinstance(call, dict):
            raise ValueError("'call' must be an object")
        return data

    def all_calls(self) -> list[Any]:
        return list(self.calls) if self.calls is not None else [self.call]


class RequestRejected(Exception):
    """The whole request is refused; nothing is written."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _reason(err: ValidationError) -> str:
    """Field and problem only: pydantic's messages name no input value, and the input is left out."""
    parts = []
    for e in err.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)[:500]


def _request_id(text: str) -> str:
    """A caller's id as a key segment: kept when it is safe there, else its sha256."""
    return text if _SAFE_ID.match(text) else hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    origin: str  # eventbridge | sqs | stepfunctions
    request_id: str
    detail: Detail

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.origin}/{self.request_id}.json"

    def body(self) -> bytes:
        """The JSON contact file (docs/contact-files.md): the flow, when given, and the calls."""
        doc: dict[str, Any] = {"flow-id": self.detail.flow_id} if self.detail.flow_id else {}
        doc["calls"] = self.detail.all_calls()
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def metadata(self) -> dict[str, str]:
        meta = {"phonon-origin": self.origin, "phonon-request-id": self.request_id}
        if self.detail.flow_id:
            meta["flow-id"] = self.detail.flow_id
        if self.detail.reference:
            meta["phonon-reference"] = self.detail.reference
        if self.detail.task_token:
            meta["phonon-task-token"] = self.detail.task_token
        return meta


@dataclass(frozen=True)
class Envelope:
    """What is known of a request before (or without) its detail parsing."""

    origin: str
    request_id: str
    reference: str = ""
    task_token: str = ""


def _loose(doc: Any, field: str, limit: int) -> str:
    """A field of a request being rejected, for the rejection event, when it is usable."""
    value = doc.get(field) if isinstance(doc, dict) else None
    return value if isinstance(value, str) and len(value) <= limit and value.isascii() else ""


def parse(doc: Any, origin: str, request_id: str) -> Request:
    """The request from a parsed detail; RequestRejected with the reason otherwise."""
    try:
        detail = Detail.model_validate(doc)
    except ValidationError as err:
        raise RequestRejected(_reason(err)) from None
    if detail.task_token and origin == "sqs":
        origin = "stepfunctions"
    if detail.request_id and origin == "stepfunctions":
        request_id = _request_id(detail.request_id)
    return Request(origin, request_id, detail)


def is_sqs_event(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and bool(records) and isinstance(records[0], dict) \
        and records[0].get("eventSource") == "aws:sqs"


def eventbridge_envelope(event: Any) -> Envelope | None:
    """An EventBridge event of ours (detail-type `Outbound Calls Requested`), else None."""
    if not isinstance(event, dict) or event.get("detail-type") != DETAIL_TYPE or "detail" not in event:
        return None
    event_id = event.get("id")
    rid = _request_id(event_id) if isinstance(event_id, str) and event_id else \
        hashlib.sha256(json.dumps(event.get("detail"), sort_keys=True).encode()).hexdigest()
    detail = event.get("detail")
    return Envelope("eventbridge", rid, _loose(detail, "reference", MAX_REFERENCE),
                    _loose(detail, "task-token", MAX_TASK_TOKEN))


def request_origin(key: str, metadata: dict[str, str] | None) -> dict[str, str]:
    """The job attributes naming where a file came from (ingest copies them onto the job):
    a request's file (under PREFIX) carries them as S3 user metadata; any other upload is
    origin "s3". Only files under PREFIX are believed, so an upload cannot pose as a request."""
    meta = {k.lower(): str(v) for k, v in (metadata or {}).items()}
    if not key.startswith(PREFIX) or meta.get("phonon-origin") not in ORIGINS:
        return {"origin": "s3", "request_id": "", "reference": "", "task_token": ""}
    return {"origin": meta["phonon-origin"], "request_id": meta.get("phonon-request-id", ""),
            "reference": meta.get("phonon-reference", "")[:MAX_REFERENCE],
            "task_token": meta.get("phonon-task-token", "")[:MAX_TASK_TOKEN]}


class IntakeService:
    """Turns a request into its contact file in `bucket`; `rejected` hears whole-request rejections."""

    def __init__(self, s3: Any, bucket: str, rejected: Rejecter):
        self.s3 = s3
        self.bucket = bucket
        self.rejected = rejected

    def write(self, req: Request) -> bool:
        """Write the request's file once: False when a redelivery finds it already there."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=req.key, Body=req.body(), IfNoneMatch="*",
                               ContentType="application/json", Metadata=req.metadata())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                logger.info("request already written", extra={"origin": req.origin, "request_id": req.request_id})
                return False
            raise
        logger.info("request written", extra={"origin": req.origin, "request_id": req.request_id, "key": req.key,
                                              "calls": len(req.detail.all_calls())})
        return True

    def _reject(self, env: Envelope, reason: str, announce: bool) -> None:
        logger.warning("request rejected", extra={"origin": env.origin, "request_id": env.request_id,
                                                   "reason": reason})
        if announce:
            self.rejected(env.origin, env.request_id, env.reference, env.task_token, reason)

    def take_event(self, event: dict) -> dict[str, Any]:
        """An EventBridge event: {"status": "written" | "already written" | "rejected" | "ignored", …}."""
        env = eventbridge_envelope(event)
        if env is None:
            logger.warning("not an 'Outbound Calls Requested' event: ignored")
            return {"status": "ignored"}
        try:
            req = parse(event["detail"], env.origin, env.request_id)
        except RequestRejected as err:
            self._reject(env, err.reason, announce=True)
            return {"status": "rejected", "request_id": env.request_id, "reason": err.reason}
        written = self.write(req)
        return {"status": "written" if written else "already written", "key": req.key}

    def take_message(self, body: str, dedupe_id: str | None, receive_count: int) -> str:
        """An intake queue message: the key written (or found). A rejected request raises
        RequestRejected (the record fails, and reaches the DLQ after the queue's
        maxReceiveCount); the rejection is announced on the first receive only."""
        rid = _request_id(dedupe_id) if dedupe_id else hashlib.sha256(body.encode()).hexdigest()
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
                doc = json.loads(doc["Message"])  # an SNS subscription without raw message delivery
        except ValueError:
            doc = None
            reason = "the message body is not valid JSON"
        else:
            reason = ""
        token = _loose(doc, "task-token", MAX_TASK_TOKEN)
        env = Envelope("stepfunctions" if token else "sqs", rid, _loose(doc, "reference", MAX_REFERENCE), token)
        try:
            if reason:
                raise RequestRejected(reason)
            req = parse(doc, "sqs", rid)
        except RequestRejected as err:
            self._reject(env, err.reason, announce=receive_count <= 1)
            raise
        self.write(req)
        return req.key


__all__ = ["DETAIL_TYPE", "MAX_CALLS", "PREFIX", "Detail", "Envelope", "IntakeService", "Request",
           "RequestRejected", "eventbridge_envelope", "is_sqs_event", "parse", "request_origin"]
