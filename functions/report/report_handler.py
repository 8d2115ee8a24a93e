"""Report Lambda: report requests from the report queue (a job settled, outcomes arrived; SQS
with partial batch failures) → the job's results report and summary written again, and its
schedule (every 5 minutes) → the final writes owed (reporting.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict[str, Any]:
    service = wiring.report_service()
    if not (isinstance(event, dict) and isinstance(event.get("Records"), list)):  # the schedule
        return {"requested": service.sweep()}

    def record_handler(record: SQSRecord) -> str:
        return service.handle(record.body or "")

    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
