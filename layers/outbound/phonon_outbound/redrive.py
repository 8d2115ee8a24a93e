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


def stack_queues(cloudformation: Any, stack: str) -> tuple[str, str]:
    """(queue URL, DLQ URL) from the deployed stack's outputs."""
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    values = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    return values["ChunkQueueUrl"], values["ChunkDeadLetterQueueUrl"]


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
