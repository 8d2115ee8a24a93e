"""`phonon-outbound redrive`: move dead-lettered chunks back to the queue they came from once
the operator has fixed the cause.

The chunk queue and the express lane (chunking.lane_for) share one DLQ. SQS stamps a message
it dead-letters with its source queue's ARN (the `DeadLetterQueueSourceArn` system attribute):
a chunk goes back to that queue, so a small job's chunk waits in the express lane again and not
behind a campaign's backlog. A message without it (sent to the DLQ by hand; moto does not set
it) goes to the chunk queue, which any chunk may use. The MessageGroupId (the job) is kept.

Safe to run at any time: a chunk that settled DONE meanwhile is dropped by the dispatcher's
chunk ledger, and a resent chunk goes out byte-identical, so calls Phonon had already accepted
are answered 201 Checksum Repeated and recorded as accepted, never placed again. Rows that the
chunk's last attempt marked FAILED become ACCEPTED when the resend succeeds, and the file's
report is written again.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

QUEUE_OUTPUT, DLQ_OUTPUT = "ChunkQueueUrl", "ChunkDeadLetterQueueUrl"


class StackError(Exception):
    """The stack cannot be used: it does not exist, or lacks the outputs we read."""


def stack_queues(cloudformation: Any, stack: str) -> tuple[str, str]:
    """(queue URL, DLQ URL) from the deployed stack's outputs."""
    values = stack_outputs(cloudformation, stack)
    missing = [k for k in (QUEUE_OUTPUT, DLQ_OUTPUT) if k not in values]
    if missing:
        raise StackError(f"stack '{stack}' has no output {' or '.join(missing)}: is it a phonon-outbound stack?")
    return values[QUEUE_OUTPUT], values[DLQ_OUTPUT]


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """The deployed stack's outputs (OutputKey -> OutputValue); StackError when there is none."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as err:
        error = err.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            region = getattr(getattr(cloudformation, "meta", None), "region_name", "") or "this region"
            raise StackError(f"stack '{stack}' not found in {region} (check --stack and --region)") from None
        raise
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


SOURCE_ATTRIBUTE = "DeadLetterQueueSourceArn"


class _SourceQueues:
    """The URL of a dead letter's source queue, from its ARN (GetQueueUrl, once per queue);
    the default queue when the message names none or the queue is gone."""

    def __init__(self, sqs: Any, default_url: str):
        self.sqs = sqs
        self.default_url = default_url
        self.urls: dict[str, str] = {}

    def url(self, message: dict) -> str:
        arn = str((message.get("Attributes") or {}).get(SOURCE_ATTRIBUTE) or "")
        parts = arn.split(":")  # arn:aws:sqs:<region>:<account>:<name>
        if len(parts) != 6 or parts[2] != "sqs":
            return self.default_url
        if arn not in self.urls:
            try:
                self.urls[arn] = self.sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
            except ClientError:
                self.urls[arn] = self.default_url
        return self.urls[arn]


def redrive(sqs: Any, dlq_url: str, queue_url: str, limit: int | None = None) -> int:
    """Move up to `limit` messages (all when None) from the DLQ to the queue each came from
    (`queue_url` when it does not say). A message is deleted from the DLQ only after its queue
    accepted its copy (at worst a copy exists twice, which the chunk ledger absorbs)."""
    sources = _SourceQueues(sqs, queue_url)
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(10, (limit or 10) - moved or 10),
                                    WaitTimeSeconds=1, VisibilityTimeout=60,
                                    MessageSystemAttributeNames=[SOURCE_ATTRIBUTE, "MessageGroupId"]).get("Messages", [])
        if not batch:
            return moved
        by_queue: dict[str, list[tuple[int, dict]]] = {}
        for i, m in enumerate(batch):
            by_queue.setdefault(sources.url(m), []).append((i, m))
        done: list[dict] = []
        for url, messages in by_queue.items():
            entries = []
            for i, m in messages:
                group = (m.get("Attributes") or {}).get("MessageGroupId")
                entries.append({"Id": str(i), "MessageBody": m["Body"], **({"MessageGroupId": group} if group else {})})
            sent = sqs.send_message_batch(QueueUrl=url, Entries=entries)
            ok = {s["Id"] for s in sent.get("Successful", [])}
            done += [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in messages if str(i) in ok]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=done)
        moved += len(done)
        if len(done) < len(batch):
            raise RuntimeError(f"the queue refused {len(batch) - len(done)} messages; they stay in the DLQ")
    return moved
