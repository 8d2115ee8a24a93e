"""What an event to the ingest function asks for (docs/design.md, "Ingest events").

- S3 `ObjectCreated:*` notification, EventBridge `Object Created`: ingest the object version.
- S3 `ObjectRemoved:*`, EventBridge `Object Deleted`: cancel the key's active jobs (a delete
  marker: every job of the key; a version deleted for good: that version's job). Nothing is
  read or sent.
- `s3:TestEvent`, `Object Restore Completed`, and every other S3 event: nothing.
- Our own continuation event (a paused ingest, `continuation_event`): ingest goes on from its
  checkpoint.
- SQS records from the ingest failure queue: each body is the record Lambda's on-failure
  destination wrote when it gave up on an invocation (`requestContext.condition`,
  `requestPayload`, `responsePayload.errorType`); the job of each object that invocation
  was ingesting ends as a rejection ("ingest failed: <errorType>"), with its report.
- EventBridge `Outbound Control` (detail: action pause | resume | cancel | limit (with
  per_minute), and job, key (+ version) or flow, optional reason), and an object created under
  `cancel/` (`cancel/<key>`,
  `cancel/a.csv` meaning `incoming/a.csv`): `control.ControlService` (docs/operating.md, "Pause,
  resume, cancel"). The marker file itself is not read, and not deleted (its lifecycle rule
  expires it): a marker uploaded again cancels the key's newest job again, which is harmless.
Only keys under `incoming/` (not "folders") are ingested or cancelled.

`handle` runs an event through the ingest service; the Lambda handler only supplies the
invocation's remaining time and the way to continue in a fresh invocation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event, SQSEvent

from . import suppress_intake
from .control import INCOMING as PREFIX
from .ingest import CANCEL_PREFIX, IngestService, ObjectRef, marker_reason
from .observability import logger
from .records import Job

RESUME = "phonon-outbound/resume-ingest"
CONTROL_DETAIL_TYPE = "Outbound Control"


def _ours(ref: ObjectRef) -> bool:
    return ref.key.startswith(PREFIX) and not ref.key.endswith("/")


def classify(event: dict) -> tuple[list[ObjectRef], list[tuple[ObjectRef, str, str | None]]]:
    """(objects to ingest, [(object, why, version or None) to cancel]) named by an event: an
    S3 notification, an EventBridge S3 event, or our continuation. Anything else names none."""
    created, deleted = _s3_objects(event)
    return [r for r in created if _ours(r)], [d for d in deleted if _ours(d[0])]


def cancel_markers(event: dict) -> list[tuple[ObjectRef, str]]:
    """[(marker object, the input key it cancels)] for every object an event says was created
    under `cancel/`: `cancel/incoming/a.csv` and `cancel/a.csv` both name `incoming/a.csv`."""
    out = []
    for ref in _s3_objects(event)[0]:
        if ref.key.startswith(CANCEL_PREFIX) and not ref.key.endswith("/") and len(ref.key) > len(CANCEL_PREFIX):
            key = ref.key[len(CANCEL_PREFIX):]
            out.append((ref, key if key.startswith(PREFIX) else PREFIX + key))
    return out


def _s3_objects(event: dict) -> tuple[list[ObjectRef], list[tuple[ObjectRef, str, str | None]]]:
    """Every object an event names as created, and as deleted, whatever its key."""
    if not isinstance(event, dict):
        return [], []
    if event.get("phonon-outbound") == RESUME:
        ref = ObjectRef(event["bucket"], event["key"], event.get("version") or None, event.get("etag") or None,
                        event_time=event.get("uploaded_at") or None)
        return [ref], []
    created: list[ObjectRef] = []
    deleted: list[tuple[ObjectRef, str, str | None]] = []
    if event.get("source") == "aws.s3" and isinstance(event.get("detail"), dict):
        eb = EventBridgeEvent(event)
        detail = eb.detail
        if not isinstance(detail.get("object"), dict) or not isinstance(detail.get("bucket"), dict):
            return [], []
        ref = ObjectRef.from_eventbridge(event)
        if eb.detail_type == "Object Created":
            created.append(ref)
        elif eb.detail_type == "Object Deleted":
            kind = str(detail.get("deletion-type") or "")
            if kind == "Permanently Deleted" and ref.version_id:
                deleted.append((ref, "the input file's version was deleted", ref.version_id))
            else:
                deleted.append((ref, "the input file was deleted", None))
    elif isinstance(event.get("Records"), list):
        for record in S3Event(event).records:
            if record.get("eventSource") != "aws:s3" or not isinstance(record.get("s3"), dict):
                continue
            ref = ObjectRef.from_s3_record(record.raw_event)
            name = record.event_name
            if name.startswith("ObjectCreated:"):
                created.append(ref)
            elif name.startswith("ObjectRemoved:"):
                if name == "ObjectRemoved:Delete" and ref.version_id:
                    deleted.append((ref, "the input file's version was deleted", ref.version_id))
                else:
                    deleted.append((ref, "the input file was deleted", None))
    return created, deleted


def objects_in(event: dict) -> list[ObjectRef]:
    """The objects an event asks to ingest."""
    return classify(event)[0]


def failure_records(event: dict) -> list[tuple[dict, str]] | None:
    """For an SQS event from the ingest failure queue: [(the failed invocation's event, reason)].
    None when the event is not an SQS event."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records or records[0].get("eventSource") != "aws:sqs":
        return None
    out: list[tuple[dict, str]] = []
    for record in SQSEvent(event).records:
        try:
            doc = json.loads(record.body or "")
        except ValueError:
            logger.warning("ingest failure queue: a message that is not JSON", extra={"message_id": record.message_id})
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("requestContext"), dict) \
                or not isinstance(doc.get("requestPayload"), dict):
            logger.warning("ingest failure queue: not a Lambda destination record",
                           extra={"message_id": record.message_id})
            continue
        response: dict = doc["responsePayload"] if isinstance(doc.get("responsePayload"), dict) else {}
        context: dict = doc["responseContext"] if isinstance(doc.get("responseContext"), dict) else {}
        # errorType only (e.g. "Sandbox.Timedout", "MemoryError"): an errorMessage may quote data.
        what = (response.get("errorType") or context.get("functionError")
                or doc["requestContext"].get("condition") or "unknown error")
        out.append((doc["requestPayload"], f"ingest failed: {str(what)[:100]}"))
    return out


def _steering(event: dict, service: IngestService) -> list[dict[str, Any]]:
    """What an event asks besides ingesting files: suppress/ files and Suppression Requested
    (docs/suppression.md), Outbound Control and cancel/ files (docs/operating.md), deleted
    input files (their jobs cancelled)."""
    results = [*suppress_intake.handle_event(event), *control_requests(event, service)]
    for obj, why, version in classify(event)[1]:
        jobs = service.cancel_key(obj, why, version)
        results.append({"key": obj.key, "status": "cancelled", "jobs": jobs})
    return results


def continuation_event(obj: ObjectRef, job: Job) -> dict[str, str]:
    """The event that resumes a paused ingest of `obj` (its job fixed the key's spelling and
    the upload time the report is named after)."""
    return {"phonon-outbound": RESUME, "bucket": obj.bucket, "key": job.key or obj.key,
            "version": obj.version_id or "", "etag": obj.etag or "",
            "uploaded_at": job.uploaded_at or obj.event_time or ""}


def handle(event: dict, service: IngestService, remaining_s: Callable[[], float],
           resume: Callable[[dict], None]) -> dict[str, Any]:
    """Run one event: {"files": [what happened to each object it names]}. `resume(event)`
    starts a fresh invocation with the continuation event of an ingest that paused."""
    results: list[dict[str, Any]] = []
    failures = failure_records(event)
    if failures is not None:
        for payload, reason in failures:
            for obj in objects_in(payload):
                result = service.fail(obj, reason)
                results.append({"key": obj.key, "job": result.job, "status": result.status, "reason": reason})
            # A steering request whose invocation failed three times (a pause, a cancel, a cancel/
            # marker, a deleted file, a suppression entry) is carried out once more here rather
            # than dropped: each is idempotent, and a lost cancel keeps calling people. If it
            # fails again this record fails: SQS tries it three times, then the failure queue's
            # DLQ (IngestFailureDeadLetterAlarm).
            results.extend(_steering(payload, service))
        return {"files": results}
    results.extend(_steering(event, service))
    for obj in classify(event)[0]:
        result = service.ingest(obj, remaining_s)
        if result.status == "paused":
            resume(continuation_event(obj, Job.from_item(service.store.jobs.get_job(result.job))))
        results.append({"key": obj.key, "job": result.job, "status": result.status, "rows": result.rows,
                        "chunks": result.chunks, "rejected": result.rejected, "reason": result.reason})
    return {"files": results}


def control_requests(event: dict, service: IngestService) -> list[dict[str, Any]]:
    """Carry out an `Outbound Control` event or the `cancel/` markers an S3 event names: one
    result each ({"control": the answer} or {"status": "refused" | "not found", "reason"}).
    A bad request is answered, never raised: the event is not retried for it (also when AWS
    itself refuses it as given, `control.refused_by_aws`); an AWS error that may pass is raised."""
    if not isinstance(event, dict):
        return []
    # (entry, action, target, reason, bucket, a limit's calls per minute)
    requests: list[tuple[dict[str, Any], str, dict[str, Any], str, str, Any]] = []
    if event.get("detail-type") == CONTROL_DETAIL_TYPE and event.get("source") != "aws.s3":
        raw = event.get("detail")
        detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
        reason = str(detail["reason"]) if isinstance(detail.get("reason"), str) else ""
        target: dict[str, Any] = {k: detail[k] for k in ("job", "key", "version", "flow") if k in detail}
        requests.append(({"event": CONTROL_DETAIL_TYPE}, str(detail.get("action", "")), target, reason,
                         service.settings.bucket_name, detail.get("per_minute")))
    for marker, key in cancel_markers(event):
        requests.append(({"key": marker.key, "cancels": key}, "cancel", {"key": key},
                         marker_reason(marker.key), marker.bucket, None))
    if not requests:
        return []
    from botocore.exceptions import ClientError

    from .control import ControlError, ControlService, UnknownTarget, finisher_settled, refused_by_aws

    settled = finisher_settled(service.store, service.finisher)
    out: list[dict[str, Any]] = []
    for entry, action, target, reason, bucket, per_minute in requests:
        try:
            answer = ControlService(service.store, bucket, settled, service.settings.records_per_minute).apply(
                action, target, reason, per_minute)
            out.append({**entry, "status": "controlled", "control": answer})
        except UnknownTarget as err:
            logger.warning("control: no such job", extra={"action": action[:20], **entry})
            out.append({**entry, "status": "not found", "reason": str(err)})
        except ControlError as err:
            logger.warning("control request refused", extra={"action": action[:20], "problem": str(err), **entry})
            out.append({**entry, "status": "refused", "reason": str(err)})
        except ClientError as err:
            # AWS refused the request as given (a ValidationException: a name no key can have
            # that the checks above let through). Retrying cannot change that: it would only
            # fail the invocation again and again (Lambda's two retries, then the failure
            # queue's), so it is answered. Any other error (throttling, a 5xx, access denied)
            # may pass: it is raised, and the invocation is tried again (`handle`).
            code = refused_by_aws(err)
            if not code:
                raise
            logger.warning("control request refused by AWS", extra={"action": action[:20], "code": code, **entry})
            out.append({**entry, "status": "refused", "reason": f"AWS refused the request as given ({code})"})
    return out


__all__ = ["CANCEL_PREFIX", "CONTROL_DETAIL_TYPE", "PREFIX", "RESUME", "cancel_markers", "classify",
           "control_requests", "continuation_event", "failure_records", "handle", "objects_in"]
