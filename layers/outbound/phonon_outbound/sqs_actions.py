"""The dispatch handler's SQS side: a chunk message's `Decision` turned into SQS calls, in this
one place (docs/design.md, "Every row ends with a status (dispatch)"), and the batch processor
that runs a batch's records in a thread pool.

| decision | SQS call | the record in `batchItemFailures` |
|---|---|---|
| `Done` | — (Lambda's event source deletes the message) | no |
| `HandBack(s)` | `SendMessage` of the same body and MessageGroupId (the record's, else the body's job: `records.chunk_message_group`) to the record's own queue with `DelaySeconds` = ⌈s⌉ capped at 900 | no (so it is deleted) |
| `RetryAfter(s)` | `ChangeMessageVisibility` to ⌈s⌉ (none when s is None: the queue's own timeout) | yes |
| `Poison` | `ChangeMessageVisibility` to 0: visible at once, to the DLQ after maxReceiveCount | yes |
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .observability import logger
from .outcomes import Decision, Done, Fate, HandBack, Poison, RetryAfter
from .records import ChunkRef, chunk_message_group

MAX_DELAY_S = 900  # SQS's longest DelaySeconds
MAX_VISIBILITY_S = 43_200  # SQS's longest visibility timeout


class RecordFailed(Exception):
    """Raised for a record that must be reported in `batchItemFailures` (RetryAfter, Poison)."""


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


def receive_count(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count or 1)


def message_group(record: SQSRecord) -> str | None:
    """The MessageGroupId a chunk message handed back is sent with: the record's own, else
    (an event source or a test that passed none) the one ingest gives its job's chunks, from
    the job the body names; None when neither says."""
    group = record.attributes.message_group_id
    if group:
        return group
    ref = ChunkRef.parse(record.body or "")
    return chunk_message_group(ref.job) if ref else None


def queue_name(arn_or_url: str) -> str:
    """A queue's name from its ARN (arn:aws:sqs:region:account:name) or URL (…/account/name)."""
    return arn_or_url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class SqsActions:
    """Carries out a chunk message's decision on the queue the message came from: the dispatch
    function reads the chunk queue and the express lane (chunking.lane_for), and a chunk handed
    back must wait in its own lane, not move to the other one."""

    def __init__(self, sqs: Any, queue_url: str, *other_queue_urls: str):
        self.sqs = sqs
        self.queue_url = queue_url  # the default: a record whose source is none of the queues
        self.urls = {queue_name(u): u for u in (*other_queue_urls, queue_url) if u}

    def queue_of(self, record: SQSRecord) -> str:
        """The URL of the record's own queue, from its `eventSourceARN` (queue names are unique
        within an account and region, so the name settles it)."""
        arn = str(record.get("eventSourceARN") or "")  # a record built by hand may have none
        return self.urls.get(queue_name(arn), self.queue_url) if arn else self.queue_url

    def apply(self, decision: Decision, record: SQSRecord) -> str:
        """Carry out `decision` for `record`: returns the chunk's fate when the record succeeds,
        raises `RecordFailed` when it is to be reported failed."""
        extra = {"message_id": record.message_id, "receive_count": receive_count(record)}
        if isinstance(decision, Done):
            return decision.outcome.fate.value
        if isinstance(decision, HandBack):  # a fresh copy waits; this one is deleted (no receive spent)
            group = message_group(record)  # the job, on its fair-queue group again
            self.sqs.send_message(QueueUrl=self.queue_of(record), MessageBody=record.body,
                                  DelaySeconds=max(0, min(MAX_DELAY_S, math.ceil(decision.seconds))),
                                  **({"MessageGroupId": group} if group else {}))
            logger.info("chunk handed back with a delay", extra={**extra, "reason": decision.reason,
                                                                 "delay_s": decision.seconds})
            return Fate.WAITING.value
        if isinstance(decision, RetryAfter):
            # Back off through the visibility timeout: SQS counts the receive, and after the
            # queue's maxReceiveCount the message moves to the DLQ.
            if decision.seconds is not None:
                self._visible_after(record, decision.seconds)
            logger.warning("chunk handed back for retry", extra={**extra, "reason": decision.reason})
            raise RecordFailed(decision.reason)
        if isinstance(decision, Poison):
            # Nothing in it names rows we could settle: fail this record only (the rest of the
            # batch goes on), visible again at once so it reaches the DLQ after the queue's
            # maxReceiveCount receives instead of after as many visibility timeouts.
            logger.error("unreadable chunk message: left for the DLQ", extra={**extra, "problem": decision.reason})
            self._visible_after(record, 0)
            raise RecordFailed(decision.reason)
        raise TypeError(f"not a dispatch decision: {decision!r}")

    def _visible_after(self, record: SQSRecord, delay_s: float) -> None:
        self.sqs.change_message_visibility(QueueUrl=self.queue_of(record), ReceiptHandle=record.receipt_handle,
                                           VisibilityTimeout=max(0, min(MAX_VISIBILITY_S, math.ceil(delay_s))))
