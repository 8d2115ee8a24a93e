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
from .ingest import IngestService, ObjectRef
from .observability import logger
from .records import Job

RESUME = "phonon-outbound/resume-ingest"
PREFIX = "incoming/"


def _ours(ref: ObjectRef) -> bool:
    return ref.key.startswith(PREFIX) and not ref.key.endswith("/")


def classify(event: dict) -> tuple[list[ObjectRef], list[tuple[ObjectRef, str, str | None]]]:
    """(objects to ingest, [(object, why, version or None) to cancel]) named by an event: an
    S3 notification, an EventBridge S3 event, or our continuation. Anything else names none."""
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
    return [r for r in created if _ours(r)], [d for d in deleted if _ours(d[0])]


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
        return {"files": results}
    results.extend(suppress_intake.handle_event(event))  # suppress/ files, Suppression Requested (docs/suppression.md)
    created, deleted = classify(event)
    for obj, why, version in deleted:
        jobs = service.cancel_key(obj, why, version)
        results.append({"key": obj.key, "status": "cancelled", "jobs": jobs})
    for obj in created:
        result = service.ingest(obj, remaining_s)
        if result.status == "paused":
            resume(continuation_event(obj, Job.from_item(service.store.jobs.get_job(result.job))))
        results.append({"key": obj.key, "job": result.job, "status": result.status, "rows": result.rows,
                        "chunks": result.chunks, "rejected": result.rejected, "reason": result.reason})
    return {"files": results}


__all__ = ["PREFIX", "RESUME", "classify", "continuation_event", "failure_records", "handle", "objects_in"]
