"""Events out (docs/events-in.md, "Rejected requests").

STAND-IN written on the `intake` branch until `eventsout`'s module is merged: only
`request_rejected`, with the signature of the shared interface. It publishes `Outbound Job
Completed` with the rejection's reason and zero counts, and answers a Step Functions task token
with `SendTaskFailure` (error `Outbound.RequestRejected`). The merged module replaces this file.
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from .observability import logger
from .settings import current

EVENT_SOURCE = "phonon-outbound"
JOB_COMPLETED = "Outbound Job Completed"
REJECTED_ERROR = "Outbound.RequestRejected"


def request_rejected(origin: str, request_id: str, reference: str, task_token: str, reason: str,
                     *, events: Any = None, states: Any = None) -> None:
    """A request refused as a whole (nothing written, nothing sent): one event, and the task's answer."""
    source: dict[str, str] = {"origin": origin, "request-id": request_id}
    if reference:
        source["reference"] = reference
    detail = {"source": source, "error": reason, "counts": {}}
    try:
        (events or boto3.client("events")).put_events(Entries=[{
            "Source": EVENT_SOURCE, "DetailType": JOB_COMPLETED, "Detail": json.dumps(detail),
            "EventBusName": current().event_bus_name}])
    except Exception:  # noqa: BLE001 - the rejection is logged by the caller; a lost event must not hide it
        logger.exception("could not publish the rejection event")
    if task_token:
        try:
            (states or boto3.client("stepfunctions")).send_task_failure(
                taskToken=task_token, error=REJECTED_ERROR, cause=reason[:32_768])
        except Exception:  # noqa: BLE001 - an expired or unknown token: the workflow times out by itself
            logger.exception("could not answer the task token")
