"""Ingest Lambda: S3 object events (direct notifications or through EventBridge), its own
continuation events and the ingest failure queue's records -> chunks on SQS. What each event
does is `phonon_outbound.ingest_events` (docs/design.md, "Ingest events"); this is the glue.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import ingest_events, wiring
from phonon_outbound.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict[str, Any]:
    def remaining_s() -> float:
        return context.get_remaining_time_in_millis() / 1000.0

    def resume(next_event: dict) -> None:
        wiring.continue_ingest(next_event, context)

    return ingest_events.handle(event, wiring.ingest_service(), remaining_s, resume)
