"""Phonon's flow-end webhook → the results item keyed by phonon-uuid (docs/webhook.md).

Phonon pushes one JSON document per flow execution: `phonon-uuid`, `keys` (the flow variables
we sent, among them our correlation key `<job>.<row>`), `callDetails[]` per attempt and, in
newer versions, `smsDetails[]` / `emailDetails[]`; some versions wrap it in `{"body": …}`;
fields appear only when there is data.

The endpoint is public (a Function URL), so everything a caller sends is hostile until proved
otherwise. The push is validated by a schema (pydantic, through powertools' parser): lenient in
*which* fields appear (all but the uuid are optional, unknown fields are ignored, one level of
`{"body": …}` wrapping, numbers as JSON numbers or numeric strings), strict in *what* they hold:

- the body is at most `MAX_BODY_BYTES` (checked on the raw event before anything is decoded),
  valid base64 when the event says so, UTF-8, and JSON without NaN/Infinity or overflowing
  numbers;
- field names are read whatever their case and `-` / `_` (``Phonon-UUID``, ``CallDetails``);
  a field given twice in one object (the same name, or two spellings of one field) is
  ambiguous and refused, as are two different correlation references;
- `phonon-uuid` is a token of at most 64 characters of ``[A-Za-z0-9-]``;
- durations are finite numbers in ``0 … MAX_DURATION``; texts we keep are at most 64 characters,
  without control characters or bidirectional overrides;
- lists are bounded (`MAX_ATTEMPTS` call attempts, `MAX_KEYS` flow variables, `MAX_DETAILS`
  SMS / e-mail details, `MAX_RECORDINGS` recordings). A push over a bound is **refused** (400),
  not truncated: the outcome is read from the *last* attempt, so keeping the first N would
  store a wrong outcome, and no real flow execution comes near these bounds.

Answers: 200 stored (a replay of the same push is idempotent and answers 200 again); 400
malformed; 401 any bad credential (the check never raises, whatever the header holds); 405 not
POST; 409 the push contradicts what is stored (its uuid is already bound to another row, or its
row already has another uuid) — nothing is written; 413 body too large; 5xx only for our own
faults (DynamoDB, Secrets Manager). Error texts name the field and the rule, never the value.

Writes are conditional, so neither a replay nor a push carrying another uuid for the same row
can rebind anything: a row's phonon-uuid is written once, with its outcome
(`store.rows.record_outcome`; the outcome vocabulary is `row_outcome`), and a results item's
binding to (job, row) — or to its correlation ref while unmatched — is written once
(`store.results.upsert_result`). The first record of a row's outcome counts it on the job
(`outcomes`), emits an Outcome* metric and asks for the report to be written again
(reporting.py, debounced).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.utilities.parser import parse
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from . import suppression
from .dtmf import keys_pressed
from .observability import count, logger, register_secret
from .records import Job, parse_row_ref
from .reports import OUTCOME_METRICS  # the one outcome table (reports.OUTCOME_GROUPS)
from .status import Status
from .store import RowUuidConflict, Store, decode_outcomes

if TYPE_CHECKING:
    from .events_out import EventsOut

# ------------------------------------------------------------------------------------- bounds
# A push is 1-3 KB, plus the flow variables we sent with the call, which Phonon echoes in
# `keys`: a call's variables fit in one Create API request (256 KB at most), and a wide CRM
# export sends thousands of columns. Function URLs would accept 6 MB.
MAX_BODY_BYTES = 1024 * 1024
MAX_AUTHORIZATION_CHARS = 1024
MAX_ATTEMPTS = 100
MAX_KEYS = 20_000  # above the contact files' column cap (16,384)
MAX_DETAILS = 100
MAX_RECORDINGS = 100
MAX_TEXT = 64
MAX_KEY_NAME = 1024
MAX_KEY_VALUE = 256 * 1024
MAX_URL = 2048
MAX_DURATION = 10**9  # as Phonon sends it (its samples: milliseconds) — 11.5 days in ms
MAX_TALK_S = MAX_DURATION // 1000  # the longest talk time believed from an attempt's times (the same 11.5 days)
UUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # `<job>.<row>`; anything else is kept out
UUID_ALIASES = ("phonon-uuid", "phononUuid", "phononUUID", "uuid")


class WebhookError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def check(self, authorization: Any) -> bool:
        """HTTP Basic, compared in constant time. Never raises: a missing, empty, huge, non-ASCII,
        colon-less or not-base64 header is simply not these credentials."""
        if not isinstance(authorization, str) or not authorization or len(authorization) > MAX_AUTHORIZATION_CHARS:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "basic" or not token or not token.isascii():
            return False
        try:
            decoded = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, pw = decoded.partition(b":")
        if not colon:
            return False
        ok_user = hmac.compare_digest(user, self.username.encode("utf-8"))
        ok_pw = hmac.compare_digest(pw, self.password.encode("utf-8"))
        return ok_user and ok_pw

    @classmethod
    def from_secret(cls, raw: str | bytes) -> Credentials:
        data = json.loads(raw)
        creds = cls(str(data["username"]), str(data["password"]))
        # Never in a log line, whatever a caller logs: the password and the header it makes.
        register_secret(creds.password)
        register_secret(base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode())
        return creds


# ------------------------------------------------------------------------------------- the schema
def _duration(value: Any) -> int | None:
    """A duration as Phonon sends it: a JSON number or a numeric string; "" means absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"\d{1,12}(\.\d{1,9})?", value.strip()):
            raise ValueError("must be a number")
        value = float(value)
    # compared as it is: a JSON integer of 400 digits does not fit a float (OverflowError)
    if (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= MAX_DURATION:
        raise ValueError(f"must be a finite number from 0 to {MAX_DURATION}")
    return int(value)


# Control characters (NUL, ESC sequences, line breaks) and bidirectional overrides have no place
# in a hangup cause or a time; stored, they would reach a report or an operator's terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _printable(value: Any) -> Any:
    if isinstance(value, str) and _UNPRINTABLE.search(value):
        raise ValueError("must not contain control characters")
    return value


def _cause(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_TEXT:
        raise ValueError(f"at most {MAX_TEXT} characters")
    return _printable(text)


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Text = Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT), AfterValidator(_printable)]
OptText = Annotated[Text | None, BeforeValidator(_blank_is_none)]
Cause = Annotated[StrictStr | StrictInt | None, BeforeValidator(_blank_is_none), AfterValidator(_cause)]
Duration = Annotated[StrictStr | StrictInt | StrictFloat | None, AfterValidator(_duration)]
KeyValue = Annotated[Annotated[StrictStr, StringConstraints(max_length=MAX_KEY_VALUE)] | StrictInt | StrictFloat
                     | StrictBool | None, AfterValidator(_finite)]
Url = Annotated[StrictStr, StringConstraints(max_length=MAX_URL)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class CallAttempt(_Model):
    """One attempt of `callDetails[]`. The callee and DID numbers are deliberately not read:
    nothing of a push that we keep is a phone number."""

    duration: Duration = None
    connect_time: OptText = Field(None, alias="connectTime")
    start_time: OptText = Field(None, alias="startTime")
    end_time: OptText = Field(None, alias="endTime")
    hangup_cause: Cause = Field(None, alias="hangupCause")


class Delivery(_Model):
    delivery_status: OptText = Field(None, alias="deliveryStatus")
    status: OptText = None


class FlowVariable(_Model):
    name: Annotated[StrictStr, StringConstraints(max_length=MAX_KEY_NAME)]
    value: KeyValue = None


def _keys_as_list(value: Any) -> Any:
    """Some versions send `keys` as an object `{name: value}`; the documented form is a list."""
    if isinstance(value, dict):
        if len(value) > MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS} flow variables")
        return [{"name": k, "value": v} for k, v in value.items()]
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class FlowEndPush(_Model):
    phonon_uuid: Annotated[StrictStr, StringConstraints(pattern=UUID_PATTERN)] = Field(
        validation_alias=AliasChoices(*UUID_ALIASES))
    call_details: Annotated[list[CallAttempt] | None, Field(max_length=MAX_ATTEMPTS)] = Field(
        None, alias="callDetails")
    # The bound sits on the list inside the Optional: on the Optional itself pydantic would apply
    # it to a JSON null too (a TypeError, a valid push refused); null means "none", as for callDetails.
    keys: Annotated[Annotated[list[FlowVariable], Field(max_length=MAX_KEYS)] | None,
                    BeforeValidator(_keys_as_list)] = None
    sms_details: Annotated[list[Delivery] | None, Field(max_length=MAX_DETAILS)] = Field(None, alias="smsDetails")
    email_details: Annotated[list[Delivery] | None, Field(max_length=MAX_DETAILS)] = Field(None, alias="emailDetails")
    recording_urls: Annotated[Annotated[list[Url], Field(max_length=MAX_RECORDINGS)] | None,
                              BeforeValidator(_one_or_many)] = Field(None, alias="recordingUrls")


_FIELD_NAMES = frozenset(
    {alias for model in (FlowEndPush, CallAttempt, Delivery, FlowVariable)
     for name, f in model.model_fields.items() for alias in (name, f.alias) if alias} | set(UUID_ALIASES))


def _describe(err: ValidationError) -> str:
    """The first problem, by field path and rule. Never the value: pydantic's `msg` does not
    carry the input, and path parts that are not our field names (keys a caller chose, which
    could be anything, phone numbers included) are left out."""
    first = err.errors(include_url=False, include_input=False)[0]
    path = ".".join(str(p) for p in first["loc"] if isinstance(p, int) or p in _FIELD_NAMES)
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid push: {path or 'body'}: {first['msg']}{more}"


# ------------------------------------------------------------------------------------- decoding
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _squash(name: str) -> str:
    return name.replace("-", "").replace("_", "").lower()


class _Ambiguous(ValueError):
    """A JSON object names one field twice (exactly, or in two spellings of one of our fields)."""


def _names_of(*models: type[BaseModel]) -> dict[str, str]:
    """Field names by their squashed form (case, '-' and '_' ignored) -> as the schema spells
    them: ``CallDetails`` is ``callDetails``, ``Hangup_Cause`` is ``hangupCause``."""
    out: dict[str, str] = {}
    for model in models:
        for name, f in model.model_fields.items():
            if name != "phonon_uuid":
                out[_squash(f.alias or name)] = out[_squash(name)] = f.alias or name
    return out


# Only where our fields stand: the push (and its `body` wrapper), the items of its detail lists
# and of `keys`. Keys elsewhere (a `keys` object's flow-variable names, unknown fields) are the
# caller's and are left as they are.
_TOP_NAMES = {**_names_of(FlowEndPush), **{_squash(a): UUID_ALIASES[0] for a in UUID_ALIASES}, "body": "body"}
_ITEM_NAMES = {"callDetails": _names_of(CallAttempt), "smsDetails": _names_of(Delivery),
               "emailDetails": _names_of(Delivery), "keys": _names_of(FlowVariable)}


def _renamed(obj: dict, names: dict[str, str]) -> dict:
    """``obj`` with its field names spelled as the schema does; two spellings of one field in
    one object with different values are ambiguous (which one counts would depend on the parser)."""
    out: dict = {}
    for key, value in obj.items():
        name = names.get(_squash(key), key) if isinstance(key, str) else key
        if name in out:
            if out[name] == value:  # the same value in two spellings says one thing
                continue
            raise _Ambiguous(f"the field {name} appears more than once"
                             if name in names.values() else "a field appears more than once")
        out[name] = value
    return out


def _canonical(doc: dict) -> dict:
    doc = _renamed(doc, _TOP_NAMES)
    for field, names in _ITEM_NAMES.items():
        items = doc.get(field)
        if isinstance(items, list):
            doc[field] = [_renamed(i, names) if isinstance(i, dict) else i for i in items]
    return doc


def _object(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object; a key given twice is ambiguous: which value counts would depend on the
    parser, and a proxy in front of us may have read the other one."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Ambiguous("a field appears more than once")
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_object)
    except _Ambiguous:
        raise
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise WebhookError(400, "body is not JSON") from None


def decode_body(body: Any, is_base64: bool = False) -> str:
    """The event's body as text, bounded and strictly decoded (400 / 413 with the reason)."""
    if body is None or body == "":
        raise WebhookError(400, "empty body")
    if not isinstance(body, str):
        raise WebhookError(400, "body is not text")
    limit = (MAX_BODY_BYTES + 2) // 3 * 4 if is_base64 else MAX_BODY_BYTES
    if len(body) > limit:  # before any decoding: a 6 MB body costs nothing more than this check
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if is_base64:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookError(400, "body is not valid base64") from None
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WebhookError(400, "body is not UTF-8") from None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a \ud800 escape in the event JSON
        raise WebhookError(400, "body is not UTF-8") from None
    if size > MAX_BODY_BYTES:
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    return body.lstrip("\ufeff")


def parse_push(body: str | bytes) -> FlowEndPush:
    """A decoded body → the validated push (WebhookError 400 when it is not one)."""
    if isinstance(body, bytes):
        if len(body) > MAX_BODY_BYTES:
            raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WebhookError(400, "body is not UTF-8") from None
    try:
        doc = _loads(body)
        if isinstance(doc, dict):
            doc = _renamed(doc, _TOP_NAMES)
        if isinstance(doc, dict) and "body" in doc and not any(a in doc for a in UUID_ALIASES):
            inner = doc["body"]  # one level of Phonon's own wrapping, as an object or as JSON text
            doc = _loads(inner) if isinstance(inner, str) else inner
        if not isinstance(doc, dict):
            raise WebhookError(400, "body is not a JSON object")
        doc = _canonical(doc)
    except _Ambiguous as err:
        raise WebhookError(400, f"invalid push: {err}") from None
    if not any(a in doc for a in UUID_ALIASES):
        raise WebhookError(400, "no phonon-uuid in the push")
    try:
        return parse(event=doc, model=FlowEndPush)
    except ValidationError as err:
        raise WebhookError(400, _describe(err)) from None
    except (TypeError, OverflowError, RecursionError) as err:  # raised by a validator on odd input
        raise WebhookError(400, f"invalid push ({type(err).__name__})") from None


def outcome_of(push: FlowEndPush | dict) -> dict:
    """The call's outcome in our own attribute names (the last connected attempt, else the last)."""
    if isinstance(push, dict):
        push = parse(event={"phonon-uuid": "x", **push}, model=FlowEndPush)
    from .events_out import _chosen_attempt  # the one rule for which attempt speaks for the call

    out: dict[str, Any] = {}
    attempts = push.call_details or []
    if attempts:
        out["attempts"] = len(attempts)
        last = attempts[_chosen_attempt(push)]
        out["connected"] = bool(last.connect_time or last.duration)
        if last.duration is not None:
            out["duration"] = last.duration
        if last.hangup_cause:
            out["hangup_cause"] = last.hangup_cause
        if last.start_time:
            out["call_start"] = last.start_time
        if last.end_time:
            out["call_end"] = last.end_time
    for details, name in ((push.sms_details, "sms_status"), (push.email_details, "email_status")):
        if details:
            status = details[-1].delivery_status or details[-1].status
            if status:
                out[name] = status
    if push.recording_urls:
        out["recordings"] = len(push.recording_urls)
    return out


# The vocabulary of a call's outcome in the report (docs/contract.md, "Outcomes"). Hangup causes
# are Q.850 / FreeSWITCH names as Phonon sends them; a cause not named here that ended an
# attempt nobody answered is FAILED.
NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT",
                              "RECOVERY_ON_TIMER_EXPIRE", "PROGRESS_TIMEOUT", "CALL_REJECTED", "19", "18", "21"})
BUSY_CAUSES = frozenset({"USER_BUSY", "NORMAL_CIRCUIT_CONGESTION", "17", "34"})
# A delivery status is read word by word ("DELIVERY_SUCCESS", "Message not delivered",
# "SENT_FAILED"): delivered when a word says so and no word says otherwise. "delivrd" is the SMPP
# delivery receipt's spelling; UNDELIV, EXPIRED and REJECTD are its failures.
DELIVERED_WORDS = frozenset({"delivered", "delivrd", "sent", "success", "successful", "successfully", "read",
                             "opened"})
NOT_DELIVERED_WORDS = frozenset({"not", "no", "never", "non", "expired", "rejected", "rejectd", "error", "bounced",
                                 "bounce", "dropped", "blocked", "invalid", "deleted", "pending", "queued"})
_WORD = re.compile(r"[a-z]+")


def _delivered(status: str) -> bool:
    words = _WORD.findall(status.lower())
    if any(w in NOT_DELIVERED_WORDS or w.startswith(("un", "fail")) for w in words):
        return False
    return any(w in DELIVERED_WORDS for w in words)


def _talk_seconds(attempt: CallAttempt) -> int | None:
    """The attempt's talk time in whole seconds: from its connect and end times when both read
    as times (Phonon's samples disagree on `duration`'s unit: the simulator and docs/webhook.md's
    sample say milliseconds, events/phonon-flow-end-push.json seconds; the times do not
    disagree), else `duration` read as milliseconds; 0 for an attempt never connected. Times
    further apart than `MAX_TALK_S` (the `duration` field's own bound, `MAX_DURATION` ms) are not
    believed (0001-01-01 to 9999-12-31 would be 315,537,897,599 s): `duration` is read instead."""
    if attempt.connect_time and attempt.end_time:
        try:
            start = datetime.fromisoformat(attempt.connect_time)
            end = datetime.fromisoformat(attempt.end_time)
            if (start.tzinfo is None) == (end.tzinfo is None):
                seconds = max(0, round((end - start).total_seconds()))
                if seconds <= MAX_TALK_S:
                    return seconds
        except ValueError:
            pass
    if attempt.duration is None:
        return 0 if not attempt.connect_time else None
    return round(float(attempt.duration) / 1000)


def row_outcome(push: FlowEndPush, body: str | bytes | None, source: str, now: int) -> dict[str, Any]:
    """The row's outcome fields (store.rows OUTCOME_ATTRS) from a push: ANSWERED / NO_ANSWER /
    BUSY / FAILED from the chosen attempt (the last connected one, else the last: its connect
    and hangup cause); DELIVERED (any channel delivered) / NOT_DELIVERED for a push with SMS or
    e-mail details only, `delivery` the status ("sms: …; email: …" when it has both);
    COMPLETED when the push says nothing more. `duration` in whole seconds (Phonon sends
    milliseconds; see `_talk_seconds`), DTMF keys of the chosen attempt (dtmf.py, the one reader)."""
    from .events_out import MAX_DTMF_CHARS, _chosen_attempt  # the attempt the event reads too

    out: dict[str, Any] = {"outcome_at": now, "outcome_src": source}
    attempts = push.call_details or []
    # Each channel's last status: a flow that sends an SMS and an e-mail reports both.
    deliveries: dict[str, str] = {}
    for channel, details in (("sms", push.sms_details), ("email", push.email_details)):
        statuses = [str(d.delivery_status or d.status) for d in details or () if d.delivery_status or d.status]
        if statuses:
            deliveries[channel] = statuses[-1]
    if attempts:
        index = _chosen_attempt(push)
        chosen = attempts[index]
        cause = str(chosen.hangup_cause or "").strip().upper()
        if chosen.connect_time or chosen.duration:
            out["outcome"] = "ANSWERED"
        elif cause in BUSY_CAUSES or "BUSY" in cause:
            out["outcome"] = "BUSY"
        elif cause in NO_ANSWER_CAUSES:
            out["outcome"] = "NO_ANSWER"
        else:
            out["outcome"] = "FAILED"
        out["attempts"] = len(attempts)
        talk = _talk_seconds(chosen)
        if talk is not None:
            out["duration"] = talk
        if chosen.hangup_cause:
            out["hangup_cause"] = chosen.hangup_cause
        if chosen.end_time:
            out["ended_at"] = chosen.end_time
        dtmf = keys_pressed(body, index, MAX_DTMF_CHARS)
        if dtmf:
            out["dtmf"] = dtmf
    elif deliveries:  # delivered when any channel reached the person
        out["outcome"] = "DELIVERED" if any(map(_delivered, deliveries.values())) else "NOT_DELIVERED"
    else:
        out["outcome"] = "COMPLETED"
    if len(deliveries) == 1:
        out["delivery"] = next(iter(deliveries.values()))
    elif deliveries:
        out["delivery"] = "; ".join(f"{channel}: {status}" for channel, status in deliveries.items())
    return out


# ------------------------------------------------------------------------------------- the service
class WebhookService:
    def __init__(self, store: Store, correlation_key: str = "OutboundRef", events: EventsOut | None = None,
                 reports: Any = None):
        self.store = store
        self.events = events  # `Outbound Call Completed` per matched push (events_out.py); None: off
        self.reports = reports  # reporting.ReportRequests: a rewrite of the report (debounced); None: off
        self.correlation_name = f"$flow.key.{correlation_key}"
        self.correlation_key = correlation_key
        self._jobs: dict[str, Job] = {}  # a job's key, flow and rows never change once ingested: one read
        self._outcomes: dict[tuple[str, int], tuple[int, dict[int, dict]]] = {}

    def _job(self, job: str) -> Job | None:
        """The job (None when unknown); read once per job after its ingest is done."""
        meta = self._jobs.get(job)
        if meta is None:
            item = self.store.jobs.get_job(job)
            if item is None:
                return None
            meta = Job.from_item(item)
            if meta.ingest_done:
                self._jobs[job] = meta
        return meta

    @staticmethod
    def _has_row(meta: Job, row: int) -> bool:
        """Rows are numbered from 1; once ingest is done we know the last one. A push naming
        another row must not invent a row in the report."""
        if meta.ingest_done:
            return 1 <= row <= meta.total_rows
        # still ingesting: the validation pre-pass has counted the file's rows
        return row >= 1 and (not meta.row_count or row <= meta.row_count)

    def correlation_ref(self, push: FlowEndPush | dict) -> str | None:
        """Our `<job>.<row>` from the push's flow variables; None when absent or not of that shape."""
        if isinstance(push, dict):
            push = parse(event={"phonon-uuid": "x", **push}, model=FlowEndPush)
        values = {k.value if isinstance(k.value, str) else repr(k.value)
                  for k in push.keys or [] if k.name in (self.correlation_name, self.correlation_key)}
        if len(values) > 1:  # two refs: which row the push is for cannot be told
            raise WebhookError(400, f"invalid push: keys: {self.correlation_key} appears more than once "
                                    f"with different values")
        value = next(iter(values), None)
        return value if isinstance(value, str) and _REF.match(value) else None

    def handle_request(self, body: Any, is_base64: bool = False) -> dict:
        return self.handle(decode_body(body, is_base64))

    def handle(self, body: str | bytes, source: str = "webhook", expected_ref: str | None = None) -> dict:
        """One push (or a pulled record shaped as one, `source="pull"`): the results item, the
        row's phonon-uuid and outcome (`store.rows.record_outcome`), and once per row the job's
        `outcomes` counter, an Outcome* metric and a request to rewrite the report.

        `expected_ref`: the `<job>.<row>` the caller asked about this uuid for (the reconciler,
        which pulls by a row's phonon-uuid). Used only when the record carries no correlation
        ref of its own (the pull API's record format is not published; without `keys` the row
        could not be found). A record whose own ref is another row's is refused (409): it is
        not bound to the row that was asked about."""
        push = parse_push(body)
        uuid = push.phonon_uuid
        now = int(time.time())
        attrs: dict[str, Any] = {**outcome_of(push), "status": "COMPLETED", "webhook_at": now}
        ref = self.correlation_ref(push)
        if expected_ref is not None:
            if ref is None:
                ref = expected_ref
            elif ref != expected_ref:
                raise self._conflict("the record's correlation ref is not the row it was asked for")
        if ref:
            attrs["ref"] = ref  # kept even when unmatched, for reconciliation
        job, row, meta = self._match(ref)
        if job is None:
            attrs["unmatched"] = True
            if not self.store.results.upsert_result(uuid, attrs):
                raise self._conflict("the phonon-uuid is already recorded for another call")
            count("WebhooksUnmatched", 1)
            logger.warning("flow-end push matched no row", extra={"phonon_uuid": uuid, "has_ref": bool(ref)})
            count("WebhooksReceived", 1)
            return {"phonon-uuid": uuid, "matched": False}

        assert row is not None and meta is not None
        outcome = self._outcome(job, row)
        if outcome and outcome.get("phonon_uuid") and outcome["phonon_uuid"] != uuid:
            raise self._conflict("the row already has another phonon-uuid")
        fields = row_outcome(push, body, source if source in ("webhook", "pull") else "webhook", now)
        try:  # the report's phonon-uuid and outcome
            row_item, newly_set = self.store.rows.record_outcome(job, row, uuid, fields)
        except RowUuidConflict:
            raise self._conflict("the row already has another phonon-uuid") from None
        info = row_item if row_item.get("status") else outcome
        attrs.update({"flow-id": meta.flow, "job": job, "file": meta.key, "row": row})
        if info:
            attrs.update({"client-identifier": info.get("cid"), "request-id": info.get("request_id"),
                          "numbers": info.get("numbers")})
        else:  # the dispatcher has not recorded its answer yet (or lost it)
            logger.info("flow-end push for a row whose chunk is not settled yet", extra={"job": job})
        if not self.store.results.upsert_result(uuid, attrs):
            if newly_set:  # undo our half: the row must not keep a uuid that belongs to another row
                self.store.rows.clear_row_uuid(job, row, uuid)
            raise self._conflict("the phonon-uuid is already recorded for another row")
        if newly_set:  # once per row: a replay (or the pull after the push) adds nothing
            # `outcomes` counts ACCEPTED rows only: it is held against the job's accepted rows
            # (Job.all_outcomes_in: the report sweep's trigger), so the outcome of a
            # FAILED row Phonon ran anyway must not make up for an ACCEPTED row still without
            # one. A row whose chunk has not settled yet (no `info`) is counted as before.
            accepted_row = not info or info.get("status") == Status.ACCEPTED
            item = self.store.jobs.add_to_job(job, outcomes=1) if accepted_row else None
            count(OUTCOME_METRICS.get(fields["outcome"], "OutcomeCompleted"), 1)
            if self.reports is not None:
                self.reports.outcome(job, item)
        suppression.opt_out(body, push, info, meta.flow, ref)  # "press 9 to stop" (docs/suppression.md)
        if self.events is not None:  # docs/events-out.md; never raises
            self.events.call_completed(push, attrs, meta, dtmf=fields.get("dtmf"))
        count("WebhooksReceived", 1)
        return {"phonon-uuid": uuid, "matched": True}

    def _match(self, ref: str | None) -> tuple[str | None, int | None, Job | None]:
        parsed = parse_row_ref(ref)
        if parsed is None:
            return None, None, None
        job, row = parsed
        meta = self._job(job)
        if meta is None or not self._has_row(meta, row):
            return None, None, None
        return job, row, meta

    @staticmethod
    def _conflict(message: str) -> WebhookError:
        count("WebhooksConflicting", 1)
        logger.warning("flow-end push refused: it contradicts what is stored", extra={"reason": message})
        return WebhookError(409, message)

    def _outcome(self, job: str, row: int) -> dict | None:
        """The row's outcome from its chunk's outcome item. Pushes for one chunk arrive close
        together, so the last few decoded items are kept (a chunk's client-identifiers, numbers
        and request-id do not change once it is settled)."""
        for (cached_job, first), (last, rows) in self._outcomes.items():
            if cached_job == job and first <= row <= last:
                return rows.get(row)
        item = self.store.rows.find_outcome(job, row)
        if item is None:
            return None
        rows = {int(r["row"]): r for r in decode_outcomes(item["outcomes"])}
        self._outcomes[(job, min(rows))] = (int(item["last_row"]), rows)
        while len(self._outcomes) > 32:
            self._outcomes.pop(next(iter(self._outcomes)))
        return rows.get(row)
