"""Webhook Lambda (Function URL): Phonon's flow-end push → results item keyed by phonon-uuid.

The HTTP side (405 / 401 / 4xx answers) is `phonon_outbound.webhook_http`, the push itself
`phonon_outbound.webhook`; this is the glue. The event is never logged: it carries the
caller's Authorization header and call details.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import webhook_http, wiring
from phonon_outbound.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
def handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict:
    return webhook_http.respond(event.raw_event, wiring.webhook_credentials, wiring.webhook_service)
