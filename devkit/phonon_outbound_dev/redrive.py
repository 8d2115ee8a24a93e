"""`phonon-outbound redrive`: move dead-lettered chunks back to the chunk queue once the
operator has fixed the cause.

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
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as err:
        error = err.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            region = getattr(getattr(cloudformation, "meta", None), "region_name", "") or "this region"
            raise StackError(f"stack '{stack}' not found in {region} (check --stack and --region)") from None
        raise
    outputs = stacks[0].get("Outputs", []) if stacks else []
    values = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    missing = [k for k in (QUEUE_OUTPUT, DLQ_OUTPUT) if k not in values]
    if missing:
        raise StackError(f"stack '{stack}' has no output {' or '.join(missing)}: is it a phonon-outbound stack?")
    return values[QUEUE_OUTPUT], values[DLQ_OUTPUT]


def redrive(sqs: Any, dlq_url: str, queue_url: str, limit: int | None = None) -> int:
    """Move up to `limit` messages (all when None) from the DLQ to the queue. A message is
    deleted from the DLQ only after the queue accepted its copy (at worst a copy exists twice,
    which the chunk ledger absorbs)."""
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(10, (limit or 10) - moved or 10),
                                    WaitTimeSeconds=1, VisibilityTimeout=60).get("Messages", [])
        if not batch:
            return moved
        entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(batch)]
        sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        ok = {s["Id"] for s in sent.get("Successful", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch) if str(i) in ok]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=done)
        moved += len(done)
        if len(done) < len(batch):
            raise RuntimeError(f"the queue refused {len(batch) - len(done)} messages; they stay in the DLQ")
    return moved
