"""Webhook Lambda (Function URL): Phonon's flow-end push → results item keyed by phonon-uuid."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.observability import logger, metrics, tracer
from phonon_outbound.webhook import WebhookError


def _answer(status: int, body: dict, headers: dict | None = None) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": json.dumps(body)}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
def handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict:
    if event.request_context.http.method.upper() != "POST":
        return _answer(405, {"error": "POST only"}, {"Allow": "POST"})
    if not wiring.webhook_credentials().check(event.headers.get("authorization")):
        metrics.add_metric(name="WebhooksUnauthorized", unit="Count", value=1)
        return _answer(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Basic realm="phonon-outbound"'})
    try:
        result = wiring.webhook_service().handle(event.decoded_body or "")
    except WebhookError as err:
        return _answer(err.status, {"error": err.message})
    return _answer(200, {"ok": True, **result})
