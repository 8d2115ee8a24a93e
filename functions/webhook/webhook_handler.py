"""Webhook Lambda (Function URL): Phonon's flow-end push → results item keyed by phonon-uuid.

405 for anything but POST, 401 for any bad credential, 4xx for a push that is malformed or
contradicts what is stored (see `phonon_outbound.webhook`), 5xx only for our own faults.
The event is never logged: it carries the caller's Authorization header and call details.
"""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.observability import count, logger, metrics, tracer
from phonon_outbound.webhook import WebhookError


def _answer(status: int, body: dict, headers: dict | None = None) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": json.dumps(body)}


def _header(event: LambdaFunctionUrlEvent, name: str) -> object:
    """A request header by name, whatever its case (Function URLs send lower case; a test or a
    proxy may not). The raw dict is read so that an odd event cannot make the lookup raise."""
    headers = event.raw_event.get("headers")
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def _method(event: LambdaFunctionUrlEvent) -> str:
    http = (event.raw_event.get("requestContext") or {}).get("http") or {}
    method = http.get("method") if isinstance(http, dict) else None
    return method.upper() if isinstance(method, str) else ""


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
def handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict:
    if _method(event) != "POST":
        return _answer(405, {"error": "POST only"}, {"Allow": "POST"})
    if not wiring.webhook_credentials().check(_header(event, "authorization")):
        count("WebhooksUnauthorized", 1)
        return _answer(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Basic realm="phonon-outbound"'})
    try:
        result = wiring.webhook_service().handle_request(event.raw_event.get("body"),
                                                         event.raw_event.get("isBase64Encoded") is True)
    except WebhookError as err:
        count("WebhooksRefused", 1)
        logger.info("flow-end push refused", extra={"status": err.status, "reason": err.message})
        return _answer(err.status, {"error": err.message})
    return _answer(200, {"ok": True, **result})
