"""The ledger repository: one CHUNK# item per chunk (a lease while a dispatcher sends it, its
final state once settled) and the idempotent count of settled chunks on the job's META item."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from botocore.exceptions import ClientError

from .common import (
    SETTLED_SET_COMPACT,
    ChunkClaim,
    Retention,
    chunk_sk,
    conditional,
    conditional_failed,
    dec,
    job_pk,
    plain,
    set_update,
)
from .jobs import JobsRepository


class ChunkState(StrEnum):
    """A CHUNK# item's `state` (the wire values are these strings): IN_PROGRESS while a
    dispatcher holds its lease; RETRY once that holder gave the lease back after a failure
    (`release_chunk`); WAITING once it handed the chunk back with a delay (a pause, a window);
    DONE once sent and recorded (never sent again); FAILED once settled without success (its
    retries ran out, or its rows were ended unsent): claimable again after a redrive."""

    IN_PROGRESS = "IN_PROGRESS"
    RETRY = "RETRY"
    WAITING = "WAITING"
    DONE = "DONE"
    FAILED = "FAILED"


class LedgerRepository(Protocol):
    compact_at: int  # the job's settled-chunk set is compacted past this many numbers

    def claim_chunk(self, job: str, chunk: int, lease_s: float, now: float | None = None) -> ChunkClaim: ...

    def get_chunk(self, job: str, chunk: int) -> dict | None:
        """The chunk's ledger item (state, lease_until, attempts, what its settle recorded)."""
        ...

    def note_chunk(self, job: str, chunk: int, **attrs: Any) -> bool: ...

    def release_chunk(self, job: str, chunk: int) -> None: ...

    def settle_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> None: ...

    def settle_open_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> bool: ...

    def count_settled(self, job: str, chunk: int, **counters: int) -> tuple[bool, dict]: ...


def compacted(meta: dict) -> tuple[int, set[int]] | None:
    """The settled set's contiguous run from `settled_below` up: (new settled_below, the chunk
    numbers that leave the set), or None when there is nothing to move."""
    below = int(meta.get("settled_below", 0))
    settled = {int(c) for c in meta.get("settled_set") or ()}
    new_below = below
    while new_below in settled:
        new_below += 1
    if new_below == below:
        return None
    return new_below, {c for c in settled if c < new_below}


class DynamoLedger:
    def __init__(self, table: Any, retention: Retention, jobs: JobsRepository):
        self.table = table
        self.retention = retention
        self.jobs = jobs
        self.compact_at = SETTLED_SET_COMPACT  # the settled set is compacted past this size

    def claim_chunk(self, job: str, chunk: int, lease_s: float, now: float | None = None) -> ChunkClaim:
        """Take the chunk's lease. A DONE chunk is never sent again; a chunk whose holder died is
        taken over once its lease runs out (the resend is byte-identical, so Phonon answers 201)."""
        now = self.retention.now() if now is None else now
        key = {"pk": job_pk(job), "sk": chunk_sk(chunk)}
        try:
            out = self.table.update_item(
                Key=key,
                UpdateExpression="SET #s = :ip, lease_until = :l, expires_at = :e ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR (#s <> :done AND (#s <> :ip OR lease_until < :now))",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":ip": ChunkState.IN_PROGRESS, ":done": ChunkState.DONE, ":l": dec(now + lease_s),
                    ":now": dec(now), ":one": 1, ":e": self.retention.expiry(now),
                },
                ReturnValues="ALL_NEW",
            )
            item = plain(out["Attributes"])
            return ChunkClaim("claimed", attempts=item.get("attempts", 1), item=item)
        except ClientError as err:
            if not conditional_failed(err):
                raise
        return refused_claim(self.get_chunk(job, chunk) or {}, now)

    def get_chunk(self, job: str, chunk: int) -> dict | None:
        item = self.table.get_item(Key={"pk": job_pk(job), "sk": chunk_sk(chunk)}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def note_chunk(self, job: str, chunk: int, **attrs: Any) -> bool:
        """Its holder's note about a chunk still IN_PROGRESS (e.g. that it hands the chunk back:
        `state=ChunkState.WAITING, lease_until=0`). A chunk settled meanwhile (by a redelivered copy, an
        abandoned run) is left as it is, so a late holder never reopens a DONE chunk: False then."""
        update = set_update(attrs)
        update["ExpressionAttributeNames"]["#ledger_state"] = "state"
        update["ExpressionAttributeValues"][":in_progress"] = ChunkState.IN_PROGRESS
        return conditional(self.table.update_item, Key={"pk": job_pk(job), "sk": chunk_sk(chunk)},
                           ConditionExpression="#ledger_state = :in_progress", **update)

    def release_chunk(self, job: str, chunk: int) -> None:
        """Give back the lease of a chunk still IN_PROGRESS (its holder failed and the message
        will be retried): the retry need not wait for the lease to run out. A chunk settled
        meanwhile is left as it is."""
        self.note_chunk(job, chunk, state=ChunkState.RETRY, lease_until=0)

    def settle_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> None:
        """Record a chunk's final state: DONE, or FAILED when its retries ran out (a FAILED
        chunk can be claimed again after an operator's redrive). Counting it on the job is
        `count_settled`'s job, idempotently."""
        attrs = {**attrs, "state": state, "settled": True, "lease_until": 0, "expires_at": self.retention.expiry()}
        self.table.update_item(Key={"pk": job_pk(job), "sk": chunk_sk(chunk)}, **set_update(attrs))

    def settle_open_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> bool:
        """Settle a chunk without sending it, unless it is DONE already (sent and recorded):
        False then. A chunk another dispatcher holds right now is settled all the same: its
        holder's own settle overwrites the outcome it records (the caller ends unsent rows,
        e.g. after an interrupted run, when nobody should be sending any more). A dispatcher's
        last receive does not use this: it takes the chunk's lease (`claim_chunk`) to settle it."""
        attrs = {**attrs, "state": state, "settled": True, "lease_until": 0, "expires_at": self.retention.expiry()}
        update = set_update(attrs)
        update["ExpressionAttributeValues"][":done_state"] = ChunkState.DONE
        return conditional(self.table.update_item, Key={"pk": job_pk(job), "sk": chunk_sk(chunk)},
                           ConditionExpression="attribute_not_exists(#state) OR #state <> :done_state", **update)

    def count_settled(self, job: str, chunk: int, **counters: int) -> tuple[bool, dict]:
        """Count a settled chunk on its job, once: the chunk number goes into the job's
        `settled_set` in the same conditional update that increments `chunks_settled`, so a
        retry after a crash between settling and counting can simply call this again.
        Returns (counted now, the job item).

        The set stays small: chunks below `settled_below` are all counted and leave the set
        (`compacted`), so it holds only the chunks settled out of order (a chunk retried for a
        while), not every chunk of a million-row file (400 KB item limit)."""
        names = {"#set": "settled_set", "#n": "chunks_settled", "#below": "settled_below",
                 **{f"#{k}": k for k in counters}}
        values = {":chunk": {chunk}, ":c": chunk, ":one": 1, ":now": int(self.retention.now()),
                  **{f":{k}": v for k, v in counters.items()}}
        try:
            out = self.table.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET updated_at = :now ADD #set :chunk, #n :one"
                                 + "".join(f", #{k} :{k}" for k in counters),
                ConditionExpression="(attribute_not_exists(#set) OR NOT contains(#set, :c)) "
                                    "AND (attribute_not_exists(#below) OR #below <= :c)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
            meta = plain(out["Attributes"])
            if len(meta.get("settled_set") or ()) > self.compact_at:
                self._compact_settled(job, meta)
            return True, meta
        except ClientError as err:
            if not conditional_failed(err):
                raise
        return False, self.jobs.get_job(job) or {}

    def _compact_settled(self, job: str, meta: dict) -> None:
        """Move the settled set's contiguous run from `settled_below` up into `settled_below`
        (optimistic: a concurrent compaction wins, this one does nothing)."""
        moved = compacted(meta)
        if moved is None:
            return
        new_below, done = moved
        values: dict[str, Any] = {":new": new_below, ":done": done}
        if "settled_below" in meta:
            cond, values[":old"] = "settled_below = :old", int(meta["settled_below"])
        else:
            cond = "attribute_not_exists(settled_below)"
        try:
            self.table.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET settled_below = :new DELETE settled_set :done",
                ConditionExpression=cond, ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if not conditional_failed(err):
                raise


def refused_claim(item: dict, now: float) -> ChunkClaim:
    """The answer to a claim the condition refused: "done" for a DONE chunk, else "busy" with
    the holder's lease left."""
    if item.get("state") == ChunkState.DONE:
        return ChunkClaim("done", attempts=item.get("attempts", 0), item=item)
    return ChunkClaim("busy", attempts=item.get("attempts", 0),
                      lease_left_s=max(0.0, float(item.get("lease_until", now)) - now), item=item)
