"""docs/phonon-api.md's response taxonomy: one :class:`ApiAnswer` → one :class:`Verdict`.

Rules (docs/phonon-api.md, "Answers" and "Where the document contradicts itself"):

1. The body's ``api-response-code`` and ``api-response-message`` decide, whatever the HTTP
   status (401 "IP Not Whitelisted" may come with HTTP 200).
2. Only when the body is not the documented JSON does the HTTP status decide: 429 → rate
   limited; 401/403 → account (bulk endpoint's "IP not whitelisted" is HTTP 403); 413 → too
   large; 5xx, 408, 2xx (e.g. a proxy's HTML page) → transient; any other status → unknown.
3. Code 202 is success only with an "Accepted"/"Message Accepted" message *and* a request-id;
   202 "Invalid Security ID" is an account error; any other 202 is UNKNOWN (fail safe: keep
   the message, never count it as success).
4. No answer at all (timeout, connection error) is transient: resend the same bytes.

Reasons are human-readable and never contain the security-id (every reason is passed through
:func:`~phonon_outbound.api.body.redact`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from .body import redact
from .client import ApiAnswer

__all__ = ["CODES", "Kind", "RETRY_SAME_BYTES", "SUCCESS", "Verdict", "classify"]


class Kind(Enum):
    """What the dispatcher should do with a chunk after an answer."""

    ACCEPTED = "ACCEPTED"  # all calls logged by Phonon (uuids now, or later via the webhook)
    ALREADY_ACCEPTED = "ALREADY_ACCEPTED"  # 201 Checksum Repeated: an earlier identical send was accepted
    PARTIAL = "PARTIAL"  # 209: calls listed in call-details accepted, the others not
    TRANSIENT = "TRANSIENT"  # retry the same bytes with backoff
    RATE_LIMITED = "RATE_LIMITED"  # retry the same bytes later; slow down
    ACCOUNT = "ACCOUNT"  # account/deployment-wide: stop and alarm, keep messages
    FLOW = "FLOW"  # this flow is misconfigured: fail the flow's messages with the reason
    RECORD = "RECORD"  # a record inside the body is bad: split the chunk to find it
    TOO_LARGE = "TOO_LARGE"  # body too big (303 / HTTP 413): split smaller
    PERMANENT = "PERMANENT"  # this body will never be accepted (our bug or no data)
    UNKNOWN = "UNKNOWN"  # undocumented answer: keep the message, alarm, never success

    def __str__(self) -> str:
        return self.value


#: Kinds after which the chunk's calls count as accepted (PARTIAL: only the listed ones).
SUCCESS = frozenset({Kind.ACCEPTED, Kind.ALREADY_ACCEPTED})
#: Kinds after which resending the byte-identical body later is the right move.
RETRY_SAME_BYTES = frozenset({Kind.TRANSIENT, Kind.RATE_LIMITED, Kind.UNKNOWN})


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str
    code: int | None
    accepted_ids: dict[str, str] = field(default_factory=dict)  # client-identifier → phonon-uuid
    request_id: str | None = None
    http_status: int | None = None
    retry_after_s: float | None = None
    maybe_delivered: bool = True

    @property
    def is_success(self) -> bool:
        return self.kind in SUCCESS


# code → (kind, documented message, hint). Code 202 is handled separately (contradiction 2).
CODES: dict[int, tuple[Kind, str, str]] = {
    200: (Kind.ACCEPTED, "Success", ""),
    209: (Kind.PARTIAL, "Partial Success", "only the calls listed in call-details were accepted"),
    201: (Kind.ALREADY_ACCEPTED, "Checksum Repeated", ""),
    500: (Kind.TRANSIENT, "Failure", "will resend the same bytes"),
    206: (Kind.TRANSIENT, "Failure from Gateway", "will resend the same bytes"),
    401: (Kind.ACCOUNT, "IP Not Whitelisted", "whitelist this deployment's egress IP in Phonon's admin"),
    211: (Kind.ACCOUNT, "Validity Expired", "the Phonon account's validity has expired"),
    212: (Kind.ACCOUNT, "Insufficient Balance", "top up the Phonon account"),
    301: (Kind.FLOW, "Invalid Flow ID", "check the flow-id and the endpoint"),
    304: (Kind.FLOW, "Invalid Flow Version", "check the flow's published version in Phonon"),
    204: (Kind.FLOW, "Invalid SMS Gateway", "check the flow's SMS gateway configuration in Phonon"),
    207: (Kind.FLOW, "DID Not Mapped", "map a DID to the flow in Phonon"),
    208: (Kind.FLOW, "No Mask Available", "configure a mask for the flow in Phonon"),
    205: (Kind.RECORD, "Invalid Contact Number", "a contact number in this request is invalid"),
    402: (Kind.RECORD, "Phone Not Whitelisted", "a contact number in this request is not whitelisted"),
    210: (Kind.RECORD, "Invalid Mandatory Parameters", "a call in this request lacks a mandatory field"),
    400: (Kind.RECORD, "Invalid Format", "a call in this request is malformed"),
    303: (Kind.TOO_LARGE, "Max Data List Size Exceeded", "too many calls in one request: split smaller"),
    203: (Kind.PERMANENT, "API Version not Supported", "the api-version is wrong (a bug)"),
    302: (Kind.PERMANENT, "Empty Call List", "the request had no calls (a bug)"),
    213: (Kind.PERMANENT, "No Data Available", ""),
}

_RATE_LIMIT_MSG = re.compile(r"rate[\s_-]*limit|too\s+many\s+requests|throttl|quota\s+exceeded", re.I)
_ACCEPTED_202 = re.compile(r"(message\s+)?accepted\.?", re.I)
_INVALID_SECID = re.compile(r"invalid\s*security[\s_-]*id", re.I)
_SUCCESS_200 = re.compile(r"(success(ful)?|accepted)\.?", re.I)


def _norm(message: str | None) -> str:
    return " ".join((message or "").split())


def _accepted_ids(answer: ApiAnswer) -> dict[str, str]:
    ids: dict[str, str] = {}
    for item in answer.call_details or ():
        cid = item.get("client-identifier")
        uuid = item.get("phonon-uuid")
        if cid is None or uuid is None or isinstance(uuid, (dict, list)) or str(uuid).strip() == "":
            continue
        ids[str(cid)] = str(uuid)
    return ids


def classify(answer: ApiAnswer, on_retry: bool = False) -> Verdict:
    """Classify one answer. ``on_retry``: this body was sent before (affects 201's reading)."""
    if answer.code is not None:
        kind, reason, ids = _classify_documented(answer, on_retry)
    elif answer.http_status is not None:
        kind, reason, ids = _classify_http(answer)
    else:
        kind, ids = Kind.TRANSIENT, {}
        if answer.maybe_delivered:
            reason = (f"No answer from Phonon: {answer.error or 'no response'} "
                      "(the request may have been accepted; resending the same bytes is safe)")
        else:
            reason = f"Could not reach Phonon: {answer.error or 'no response'} (the request was not sent)"
    return Verdict(
        kind=kind,
        reason=redact(reason),
        code=answer.code,
        accepted_ids=ids,
        request_id=answer.request_id,
        http_status=answer.http_status,
        retry_after_s=answer.retry_after_s,
        maybe_delivered=answer.maybe_delivered,
    )


def _head(answer: ApiAnswer, documented_message: str = "") -> str:
    msg = _norm(answer.message) or documented_message or "(no message)"
    http = f"HTTP {answer.http_status}" if answer.http_status is not None else "no HTTP status"
    return f"Phonon answered {answer.code} {msg} ({http})"


def _classify_documented(answer: ApiAnswer, on_retry: bool) -> tuple[Kind, str, dict[str, str]]:
    code = answer.code
    assert code is not None
    msg = _norm(answer.message)
    ids = _accepted_ids(answer)
    rid = f"request-id {answer.request_id}" if answer.request_id else "no request-id"

    if code == 202:
        head = _head(answer)
        if _INVALID_SECID.search(msg):
            return Kind.ACCOUNT, f"{head}: the flow's security-id is wrong; check it in Secrets Manager", {}
        if _ACCEPTED_202.fullmatch(msg):
            if answer.request_id:
                later = (f"{len(ids)} phonon-uuid(s) in call-details" if ids
                         else "phonon-uuids will come with the flow-end webhook")
                return Kind.ACCEPTED, f"{head}: accepted as {rid}; {later}", ids
            return (Kind.UNKNOWN,
                    f"{head} without a request-id: not counted as success; the message is kept", {})
        return (Kind.UNKNOWN,
                f"{head}: undocumented message under code 202; not counted as success, the message is kept",
                {})

    entry = CODES.get(code)
    # A rate-limit refusal is not in the table: code 429, or a failure-type code (or an
    # undocumented one) whose message says "rate limit" or that came with HTTP 429.
    if code == 429 or ((entry is None or entry[0] is Kind.TRANSIENT)
                       and (_RATE_LIMIT_MSG.search(msg) or answer.http_status == 429)):
        return Kind.RATE_LIMITED, f"{_head(answer)}: rate limited, will resend the same bytes later", {}

    if entry is None:
        return (Kind.UNKNOWN,
                f"{_head(answer)}: undocumented response code; not counted as success, the message is kept",
                {})
    kind, documented, hint = entry
    head = _head(answer, documented)

    if code == 200:
        if msg and not _SUCCESS_200.fullmatch(msg):
            return (Kind.UNKNOWN,
                    f"{head}: code 200 with an unexpected message; not counted as success, the message is kept",
                    {})
        if answer.call_details is None and not answer.request_id:
            return (Kind.UNKNOWN,
                    f"{head} without call-details or request-id: not counted as success, the message is kept",
                    {})
        return Kind.ACCEPTED, f"{head}: accepted as {rid}, {len(ids)} phonon-uuid(s) in call-details", ids
    if code == 209:
        return Kind.PARTIAL, f"{head}: {hint} ({len(ids)} listed, {rid})", ids
    if code == 201:
        if on_retry:
            return (Kind.ALREADY_ACCEPTED,
                    f"{head} on a resend: the earlier identical request was accepted", {})
        return (Kind.ALREADY_ACCEPTED,
                f"{head} on the first attempt: a byte-identical request was sent before "
                "(a redelivered message); counted as accepted earlier", {})
    return kind, f"{head}: {hint}" if hint else head, {}


def _classify_http(answer: ApiAnswer) -> tuple[Kind, str, dict[str, str]]:
    status = answer.http_status
    assert status is not None
    what = answer.error or "body is not Phonon's documented JSON"
    detail = _norm(answer.message) or _norm(answer.body_excerpt)
    tail = f": {detail!r}" if detail else ""
    head = f"Phonon answered HTTP {status}, {what}{tail}"
    if status == 429:
        return Kind.RATE_LIMITED, f"{head}; rate limited, will resend the same bytes later", {}
    if status in (401, 403):
        return (Kind.ACCOUNT,
                f"{head}; the IP is probably not whitelisted (bulk endpoint answers HTTP 403): "
                "whitelist this deployment's egress IP", {})
    if status == 413:
        return Kind.TOO_LARGE, f"{head}; the request body is too large: split smaller", {}
    if status >= 500 or status == 408 or 200 <= status < 300:
        return Kind.TRANSIENT, f"{head}; will resend the same bytes", {}
    return (Kind.UNKNOWN,
            f"{head}; unexpected HTTP status (check the API URL); the message is kept", {})
