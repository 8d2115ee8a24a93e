"""Dispatch Lambda: SQS chunk messages → Phonon, with partial batch failures.

Records of one batch are sent concurrently (`ConcurrentBatchProcessor`), so one instance keeps
several requests in flight while the API answers slowly; the shared limiter keeps the total
under the rate limit whatever the concurrency.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.dispatch import PoisonMessage, RetryLater
from phonon_outbound.observability import logger, metrics, tracer


class ConcurrentBatchProcessor(BatchProcessor):
    """powertools' BatchProcessor, with the records of a batch processed by a thread pool.
    (powertools' own async processor needs an async handler; ours blocks on HTTP.)"""

    def __init__(self, workers: int):
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.workers = workers

    def process(self) -> list[tuple]:
        if len(self.records) <= 1 or self.workers <= 1:
            return super().process()
        with ThreadPoolExecutor(max_workers=min(self.workers, len(self.records))) as pool:
            return list(pool.map(self._process_record, self.records))


_context: dict[str, LambdaContext] = {}


def record_handler(record: SQSRecord) -> str:
    service = wiring.dispatch_service()
    context = _context.get("ctx")
    receive_count = int(record.attributes.approximate_receive_count or 1)
    try:
        outcome = service.handle(record.body, receive_count,
                                 lambda: context.get_remaining_time_in_millis() / 1000.0 if context else 600.0)
    except RetryLater as err:
        # Back off through the visibility timeout: SQS counts the receive, and after the
        # queue's maxReceiveCount the message moves to the DLQ.
        _visible_after(record, err.delay_s)
        logger.warning("chunk handed back for retry", extra={"message_id": record.message_id,
                                                             "receive_count": receive_count, "reason": err.reason})
        raise
    except PoisonMessage as err:
        # Nothing in it names rows we could settle: fail this record only (the rest of the
        # batch goes on), make it visible again at once so it reaches the DLQ after the
        # queue's maxReceiveCount receives instead of after as many visibility timeouts.
        logger.error("unreadable chunk message: left for the DLQ", extra={
            "message_id": record.message_id, "receive_count": receive_count, "problem": str(err)})
        _visible_after(record, 0)
        raise
    except Exception:
        logger.exception("chunk failed", extra={"message_id": record.message_id, "receive_count": receive_count})
        raise
    return outcome.status


def _visible_after(record: SQSRecord, delay_s: float) -> None:
    wiring.client("sqs").change_message_visibility(
        QueueUrl=wiring.settings().chunk_queue_url, ReceiptHandle=record.receipt_handle,
        VisibilityTimeout=max(0, min(43_200, math.ceil(delay_s))))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    _context["ctx"] = context
    processor = ConcurrentBatchProcessor(wiring.settings().dispatch_parallelism)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
