"""Events out (docs/events-out.md): the one place our EventBridge events are built and
published, and where a Step Functions task token is answered.

- `Outbound Job Completed`, once per job when its report is written (a whole-file or
  whole-request rejection included), and once for a request the intake could not turn into a
  file at all (`request_rejected`): the job, its status, where it came from, counts per status
  (every `Status`, 0 included), the report's location, its times, and the reason when it was
  rejected, failed or cancelled.
- `Outbound Call Completed`, once per flow-end push matched to one of our rows (when
  `PUBLISH_CALL_EVENTS` is on): the call's phonon-uuid, client-identifier, the caller's
  reference, its job and row, and its outcome. No phone number: not even masked (a CRM knows
  the contact by its client-identifier; an event bus fans out to every rule's target, archives
  and other accounts, beyond the state table's retention).
- The job's task token (Step Functions `.waitForTaskToken`): `SendTaskSuccess` with the job
  event's detail as output, or `SendTaskFailure` (`Outbound.RequestRejected`, the reason as
  cause) when the request was rejected whole. A token that expired or was closed meanwhile
  is logged and swallowed. The token is never logged nor put in an event.

Nothing here raises into the caller: the report is written and the job settled before an event
goes out; a lost event is counted (`EventsNotPublished`, `TaskAnswersFailed`) and logged
without its data (the detail type, the job, AWS's error code).

Delivery is at least once: a push Phonon delivers again publishes its call event again, and a
consumer deduplicates on `phonon-uuid` (calls) or `job-id` (jobs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .observability import count, logger
from .records import Job, JobStatus, Origin
from .status import Status

SOURCE = "phonon-outbound"
JOB_COMPLETED = "Outbound Job Completed"
CALL_COMPLETED = "Outbound Call Completed"
MAX_ENTRY_BYTES = 256 * 1024  # PutEvents: one entry (and one request) at most
MAX_REASON_CHARS = 1024
MAX_TEXT_CHARS = 256  # the caller's reference, a client-identifier, a request id in an event
MAX_DTMF_CHARS = 64
REJECTED_ERROR = "Outbound.RequestRejected"
MAX_CAUSE_CHARS = 4096  # SendTaskFailure allows 32,768; a reason is far shorter
TOKEN_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


def iso(epoch: float) -> str:
    """`2026-11-30T19:40:56.123Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def _clip(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _source(origin: str, request_id: str = "", reference: str = "", bucket: str = "", key: str = "",
            version: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"origin": origin if origin in set(Origin) else Origin.S3.value}
    for name, value in (("bucket", bucket), ("key", key), ("version", version)):
        if value:
            out[name] = value
    if request_id:
        out["request-id"] = _clip(request_id, MAX_TEXT_CHARS)
    if reference:
        out["reference"] = _clip(reference, MAX_TEXT_CHARS)
    return out


def _counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Every status, 0 included, keyed by its value (as the report's status column writes it)."""
    by_value = {str(k).upper(): int(v) for k, v in counts.items()}
    return {s.value: by_value.get(s.value, 0) for s in Status}


def job_completed(meta: Job, *, job: str, status: JobStatus,
                  counts: Mapping[str, int], rows: int, bucket: str, csv_key: str, summary_key: str,
                  completed_at: float) -> dict[str, Any]:
    """The detail of `Outbound Job Completed` for a job whose report was written."""
    detail: dict[str, Any] = {
        "job-id": job, "status": status.value,
        "source": _source(meta.origin, meta.request_id, meta.reference, meta.bucket, meta.key, meta.version),
    }
    if meta.flow:
        detail["flow-id"] = meta.flow
    detail["rows"] = int(rows)
    detail["counts"] = _counts(counts)
    detail["report"] = {"bucket": bucket, "results-key": csv_key, "summary-key": summary_key}
    if meta.created_at:
        detail["started-at"] = iso(meta.created_at)
    detail["completed-at"] = iso(completed_at)
    reason = {JobStatus.REJECTED: meta.error, JobStatus.FAILED: meta.failure,
              JobStatus.CANCELLED: meta.cancelled_reason}.get(status)
    if reason:
        detail["reason"] = _clip(reason, MAX_REASON_CHARS)
    return detail


def request_rejected_detail(origin: str, request_id: str, reference: str, reason: str,
                            at: float | None = None) -> dict[str, Any]:
    """The detail of `Outbound Job Completed` for a request refused before it became a job:
    status REJECTED, no job id, no report, zero counts."""
    now = time.time() if at is None else at
    return {"status": JobStatus.REJECTED.value, "source": _source(origin, request_id, reference),
            "rows": 0, "counts": _counts({}), "completed-at": iso(now),
            "reason": _clip(reason or "the request was rejected", MAX_REASON_CHARS)}


# ------------------------------------------------------------------------------ calls
def _chosen_attempt(push: Any) -> int:
    """The attempt `webhook.outcome_of` reads: the last connected one, else the last."""
    attempts = list(getattr(push, "call_details", None) or [])
    connected = [i for i, a in enumerate(attempts) if a.connect_time or a.duration]
    return connected[-1] if connected else len(attempts) - 1


def call_completed(attrs: Mapping[str, Any], meta: Job, *,
                   dtmf: str | None = None, at: float | None = None) -> dict[str, Any]:
    """The detail of `Outbound Call Completed` from the results attributes the webhook recorded
    (`webhook.outcome_of` plus the row's job, row, flow and client-identifier)."""
    outcome: dict[str, Any] = {"answered": bool(attrs.get("connected")), "attempts": int(attrs.get("attempts") or 0)}
    for ours, theirs in (("duration", "duration"), ("hangup-cause", "hangup_cause"), ("call-start", "call_start"),
                         ("call-end", "call_end"), ("sms-status", "sms_status"), ("email-status", "email_status"),
                         ("recordings", "recordings")):
        if attrs.get(theirs) is not None:
            outcome[ours] = attrs[theirs]
    if dtmf:
        outcome["dtmf"] = dtmf
    detail: dict[str, Any] = {"phonon-uuid": str(attrs["phonon-uuid"])}
    if attrs.get("client-identifier"):
        detail["client-identifier"] = _clip(attrs["client-identifier"], MAX_TEXT_CHARS)
    if meta.reference:
        detail["reference"] = _clip(meta.reference, MAX_TEXT_CHARS)
    detail.update({"job-id": str(attrs["job"]), "row": int(attrs["row"])})
    if attrs.get("flow-id"):
        detail["flow-id"] = attrs["flow-id"]
    detail["origin"] = meta.origin.value
    detail["outcome"] = outcome
    detail["received-at"] = iso(time.time() if at is None else at)
    return detail


# ------------------------------------------------------------------------------ publishing
def entry_size(entry: Mapping[str, Any]) -> int:
    """PutEvents' size of one entry (AWS: "Calculating PutEvents event entry size"): 14 bytes
    for Time, plus the UTF-8 bytes of Source, DetailType, Detail and each Resource."""
    size = 14 if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name, "")).encode("utf-8"))
    return size + sum(len(str(r).encode("utf-8")) for r in entry.get("Resources", ()))


class EventsOut:
    """PutEvents on one bus, and the task-token answers (clients from `wiring.events_out`)."""

    def __init__(self, events: Any, sfn: Any = None, bus: str = "default", call_events: bool = True):
        """`sfn`: a Step Functions client, or a function that makes one when a token is first
        answered (the webhook never answers one, and a client costs its cold start ~20 ms)."""
        self.events = events
        self._sfn = sfn
        self.bus = bus
        self.call_events = call_events

    @property
    def sfn(self) -> Any:
        if callable(self._sfn):
            self._sfn = self._sfn()
        return self._sfn

    # -------------------------------------------------------------- EventBridge
    def publish(self, detail_type: str, details: Iterable[Mapping[str, Any]], job: str = "") -> int:
        """Publish each detail as one event; returns how many EventBridge took. Never raises."""
        entries = []
        for detail in details:
            entry = {"Source": SOURCE, "DetailType": detail_type, "EventBusName": self.bus,
                     "Detail": json.dumps(detail, ensure_ascii=False, separators=(",", ":"))}
            if entry_size(entry) > MAX_ENTRY_BYTES:
                self._lost(detail_type, job, "EntryTooLarge", 1)
                continue
            entries.append(entry)
        published = 0
        for attempt in range(2):  # entries EventBridge refused (throttled, internal) get a second try
            if not entries:
                break
            try:
                answer = self.events.put_events(Entries=entries)
            except (ClientError, BotoCoreError) as err:
                self._lost(detail_type, job, _code(err), len(entries))
                return published
            results = answer.get("Entries", [])
            failed = [(e, r) for e, r in zip(entries, results, strict=False) if r.get("ErrorCode")]
            published += len(entries) - len(failed)
            if failed and attempt == 1:
                self._lost(detail_type, job, str(failed[0][1].get("ErrorCode")), len(failed))
            entries = [e for e, _ in failed]
        return published

    @staticmethod
    def _lost(detail_type: str, job: str, code: str, n: int) -> None:
        count("EventsNotPublished", n)
        logger.error("events not published", extra={"detail_type": detail_type, "job": job, "error": code,
                                                    "events": n})

    # -------------------------------------------------------------- Step Functions
    def answer_task(self, token: str, detail: Mapping[str, Any]) -> bool:
        """SendTaskSuccess with the job's detail, or SendTaskFailure for a whole-request
        rejection. Returns whether Step Functions took the answer. Never raises."""
        if not token or self._sfn is None:
            return False
        job = str(detail.get("job-id", ""))
        rejected = detail.get("status") == JobStatus.REJECTED
        try:
            if rejected:
                self.sfn.send_task_failure(taskToken=token, error=REJECTED_ERROR,
                                           cause=_clip(detail.get("reason") or "rejected", MAX_CAUSE_CHARS))
            else:
                self.sfn.send_task_success(taskToken=token, output=json.dumps(detail, ensure_ascii=False))
        except (ClientError, BotoCoreError) as err:  # the message may quote the token: only the code
            code = _code(err)
            if code in TOKEN_GONE:
                count("TaskTokensExpired", 1)
                logger.warning("the task token is no longer valid; the answer was dropped",
                               extra={"job": job, "error": code})
            else:
                count("TaskAnswersFailed", 1)
                logger.error("could not answer the task token", extra={"job": job, "error": code})
            return False
        logger.info("task token answered", extra={"job": job, "answer": "failure" if rejected else "success"})
        return True

    # -------------------------------------------------------------- what the services call
    def job_completed(self, detail: Mapping[str, Any], task_token: str = "") -> None:
        """The job's completion: its event, then its task token's answer."""
        self.publish(JOB_COMPLETED, [detail], job=str(detail.get("job-id", "")))
        self.answer_task(task_token, detail)

    def request_rejected(self, origin: str, request_id: str, reference: str, task_token: str,
                         reason: str) -> dict[str, Any]:
        """A request the intake could not turn into a file: `Outbound Job Completed` with status
        REJECTED and no report, and the task token answered with failure. Returns the detail."""
        detail = request_rejected_detail(origin, request_id, reference, reason)
        self.publish(JOB_COMPLETED, [detail])
        self.answer_task(task_token, detail)
        return detail

    def call_completed(self, push: Any, attrs: Mapping[str, Any], meta: Job, dtmf: str | None = None) -> None:
        """The webhook's one call once a matched push's outcome is recorded (`dtmf`: the keys of
        the chosen attempt, as the row's outcome holds them: dtmf.py). Never raises."""
        if not self.call_events:
            return
        try:
            detail = call_completed({**attrs, "phonon-uuid": push.phonon_uuid}, meta, dtmf=dtmf)
        except Exception:  # noqa: BLE001 - an event must never fail the push: it is stored already
            self._lost(CALL_COMPLETED, str(attrs.get("job", "")), "BuildFailed", 1)
            return
        self.publish(CALL_COMPLETED, [detail], job=detail["job-id"])


def _code(err: Exception) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code") or "ClientError")
    return type(err).__name__


def from_env() -> EventsOut:
    """An `EventsOut` from this environment's settings and fresh clients (for callers without
    the wiring's, e.g. a one-off `request_rejected`)."""
    import boto3

    from .settings import current

    s = current()
    return EventsOut(boto3.client("events"), boto3.client("stepfunctions"), s.event_bus_name,
                     getattr(s, "publish_call_events", True))


def request_rejected(origin: str, request_id: str, reference: str, task_token: str, reason: str,
                     out: EventsOut | None = None) -> None:
    """The intake's call for a request it cannot turn into a file (docs/events-out.md); without
    `out`, clients are made for the call (rare: a request refused whole)."""
    (out or from_env()).request_rejected(origin, request_id, reference, task_token, reason)


__all__ = ["CALL_COMPLETED", "JOB_COMPLETED", "REJECTED_ERROR", "SOURCE", "EventsOut", "Origin", "call_completed",
           "entry_size", "from_env", "job_completed", "request_rejected", "request_rejected_detail"]
