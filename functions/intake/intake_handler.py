"""Intake Lambda: `Outbound Calls Requested` events (EventBridge) and intake queue messages
(SQS, Step Functions, SNS) → one JSON contact file each under `incoming/requests/`, which
ingest takes from there (docs/events-in.md). What a request is: `phonon_outbound.intake`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import events_out, intake, wiring
from phonon_outbound.observability import logger, metrics, tracer
from phonon_outbound.sqs_actions import receive_count


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict[str, Any]:
    service = intake.IntakeService(wiring.client("s3"), wiring.settings().bucket_name, events_out.request_rejected)
    if not intake.is_sqs_event(event):
        return service.take_event(event)

    def record_handler(record: SQSRecord) -> str:
        dedupe_id = record.attributes.message_deduplication_id
        return service.take_message(record.body or "", dedupe_id, receive_count(record))

    # a batch whose every record failed still answers per record (not an exception for the whole batch)
    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
