"""Dispatch Lambda: SQS chunk messages → Phonon, with partial batch failures.

The service decides what becomes of each message (`phonon_outbound.outcomes.Decision`);
`SqsActions` carries that out on the queue. Records of one batch are sent concurrently
(`ConcurrentBatchProcessor`); the shared limiter keeps the total under the rate limit.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.dispatch import DispatchService, express_lane
from phonon_outbound.observability import logger, metrics, tracer
from phonon_outbound.sqs_actions import ConcurrentBatchProcessor, SqsActions, receive_count


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    settings = wiring.settings()
    service: DispatchService = wiring.dispatch_service()
    actions = SqsActions(wiring.client("sqs"), settings.chunk_queue_url, settings.express_queue_url)

    def remaining_s() -> float:
        return context.get_remaining_time_in_millis() / 1000.0

    def record_handler(record: SQSRecord) -> str:
        # the record's lane, for the limiter's fair share (dispatch.BULK_HORIZON_S)
        token = express_lane.set(bool(settings.express_queue_url)
                                 and actions.queue_of(record) == settings.express_queue_url)
        try:
            return actions.apply(service.handle(record.body, receive_count(record), remaining_s), record)
        finally:
            express_lane.reset(token)

    processor = ConcurrentBatchProcessor(settings.dispatch_parallelism)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
