"""Ingest Lambda: S3 ObjectCreated (direct notification or via EventBridge) → chunks on SQS."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.observability import logger, metrics, tracer

RESUME = "phonon-outbound/resume-ingest"


def objects_in(event: dict) -> list[ObjectRef]:
    """The objects an event names: an S3 notification, an EventBridge 'Object Created' event,
    or our own continuation event. `s3:TestEvent` and other prefixes name none."""
    if event.get("phonon-outbound") == RESUME:
        return [ObjectRef(event["bucket"], event["key"], event.get("version") or None, event.get("etag") or None)]
    if event.get("source") == "aws.s3" and isinstance(event.get("detail"), dict):
        d = event["detail"]
        obj = d.get("object", {})
        refs = [ObjectRef(d["bucket"]["name"], obj["key"], obj.get("version-id") or None, obj.get("etag"),
                          obj.get("size"))]
    else:
        refs = [ObjectRef.from_s3_record(r) for r in event.get("Records", [])
                if r.get("eventSource") == "aws:s3" and str(r.get("eventName", "")).startswith("ObjectCreated")]
    return [r for r in refs if r.key.startswith("incoming/") and not r.key.endswith("/")]


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict[str, Any]:
    service = wiring.ingest_service()
    results = []
    for obj in objects_in(event):
        result = service.ingest(obj, lambda: context.get_remaining_time_in_millis() / 1000.0)
        if result.status == "paused":
            wiring.continue_ingest({"phonon-outbound": RESUME, "bucket": obj.bucket, "key": obj.key,
                                    "version": obj.version_id or "", "etag": obj.etag or ""}, context)
        results.append({"key": obj.key, "job": result.job, "status": result.status, "rows": result.rows,
                        "chunks": result.chunks, "rejected": result.rejected, "reason": result.reason})
    return {"files": results}
