"""All DynamoDB access: one class, so every key layout lives in one file.

State table (`pk`/`sk`, see docs/design.md):
  JOB#<job>/META          the file job: object, flow, counts, checkpoint, chunk counters
  JOB#<job>/ROW#<row>     one row's outcome when it is not in a chunk's outcome item: rows that
                          ingest rejected, rows filled in by an aborted run, and the phonon-uuid
                          a flow-end webhook brought (a "patch": no status of its own)
  JOB#<job>/OUT#<row>     a settled chunk's row outcomes in one item, keyed by its first row
  JOB#<job>/CHUNK#<n>     the chunk ledger: lease while a dispatcher sends it, DONE when settled
  OBJ#<object identity>/- an S3 object version claimed by one job (duplicate notifications)
  KEY#<bucket>/<key>/JOB#<job>       the jobs of one input key (cancelled when the object is deleted)
  KEY#<bucket>/<key>/REPORT#<stamp>  a report name taken by one job of the key (no two share one)
  DEDUPE#<hash>/-         a call claimed for the dedupe window
  LIMIT#<name>/-          the global rate limiter
  BREAKER#<flow>/-        the per-flow circuit breaker
Results table: one item per call Phonon accepted, keyed by `phonon-uuid`.

Retention: every item that holds personal data (job META, ROW#, OUT#, KEY#, object claims)
carries `expires_at` (epoch seconds) = now + the retention period (`Store.expiry()`); both
tables have DynamoDB TTL on it. TTL deletes late (up to days), so readers that matter
(`get_job`, `jobs_for_key`, the outcome readers) treat an expired item as absent.

Bounds: DynamoDB refuses an item over 400 KB (and moto applies part of such an update before
refusing it, which hides the problem locally). Job items hold counters, keys and a few
strings; the free-text ones (`notes`, `error`, `cancelled_reason`) are capped here
(`bound_job_attrs`), whoever writes them.
"""

from __future__ import annotations

import gzip
import heapq
import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

ROW_PAD = 10
CHUNK_PAD = 8
DEFAULT_RETENTION_S = 90 * 86400
ACTIVE_SHARD = "A"  # the `active-jobs` index's hash key while a job is not completed
MAX_NOTES = 20  # notes kept on a job item (and so in its summary); more are counted, not stored
MAX_NOTE_CHARS = 500
MAX_TEXT_CHARS = 2000  # error / cancelled_reason
SETTLED_SET_COMPACT = 500  # a job's settled-chunk set is compacted past this many numbers


def _clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def bound_notes(notes: Iterable[str]) -> list[str]:
    """At most MAX_NOTES distinct notes of at most MAX_NOTE_CHARS each (linear: a set of the
    ones seen); the rest are summed up in one last note."""
    kept: list[str] = []
    seen: set[str] = set()
    dropped = 0
    for note in notes:
        note = _clip(note, MAX_NOTE_CHARS)
        if note in seen:
            continue
        seen.add(note)
        if len(kept) < MAX_NOTES:
            kept.append(note)
        else:
            dropped += 1
    if dropped:
        kept.append(f"... and {dropped:,} more notes not shown")
    return kept


def bound_job_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    if "notes" in out and out["notes"] is not None:
        out["notes"] = bound_notes(out["notes"])
    for name in ("error", "cancelled_reason", "missing_reason"):
        if isinstance(out.get(name), str):
            out[name] = _clip(out[name], MAX_TEXT_CHARS)
    return out


def job_pk(job: str) -> str:
    return f"JOB#{job}"


def row_sk(row: int) -> str:
    return f"ROW#{row:0{ROW_PAD}d}"


def chunk_sk(chunk: int) -> str:
    return f"CHUNK#{chunk:0{CHUNK_PAD}d}"


def outcome_sk(first_row: int) -> str:
    return f"OUT#{first_row:0{ROW_PAD}d}"


# A chunk's row outcomes travel as gzip(JSON {"f": fields, "r": [[values], ...]}) in one item.
OUTCOME_FIELDS = ("row", "status", "cid", "request_id", "phonon_uuid", "reason", "numbers")
# DynamoDB's item limit is 400 KB; a 500-call chunk's blob is ~10-25 KB. A bigger one (huge
# batch sizes, long reasons) falls back to one item per row.
MAX_OUTCOME_BLOB = 300_000


def encode_outcomes(rows: list[dict]) -> bytes:
    values = [[r.get(f, "") for f in OUTCOME_FIELDS] for r in sorted(rows, key=lambda r: int(r["row"]))]
    raw = json.dumps({"f": OUTCOME_FIELDS, "r": values}, separators=(",", ":"), ensure_ascii=False)
    return gzip.compress(raw.encode("utf-8"), compresslevel=6)


def decode_outcomes(blob: Any) -> list[dict]:
    data = json.loads(gzip.decompress(bytes(getattr(blob, "value", blob))))
    fields = data["f"]
    return [{f: v for f, v in zip(fields, values, strict=True) if v not in ("", None, [])} for values in data["r"]]


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; hand the rest of the code plain ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dec(value: float) -> Decimal:
    return Decimal(str(round(value, 6)))


def _set_update(attrs: dict[str, Any]) -> dict[str, Any]:
    """`SET #a = :a, …` with its names and values (floats as Decimal), for update_item."""
    return {
        "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in attrs),
        "ExpressionAttributeNames": {f"#{k}": k for k in attrs},
        "ExpressionAttributeValues": {f":{k}": (_dec(v) if isinstance(v, float) else v) for k, v in attrs.items()},
    }


_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


def _conditional_failed(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class RowUuidConflict(Exception):
    """The row already carries another phonon-uuid (`Store.set_row_uuid`)."""

    def __init__(self, job: str, row: int):
        super().__init__(f"row {row} of job {job} already has another phonon-uuid")
        self.job = job
        self.row = row


@dataclass(frozen=True)
class ChunkClaim:
    state: str  # "claimed", "done", "busy"
    attempts: int = 0
    lease_left_s: float = 0.0
    item: dict | None = None


class Store:
    def __init__(self, state_table: str, results_table: str, resource: Any = None,
                 retention_s: float = DEFAULT_RETENTION_S):
        self._ddb = resource or boto3.resource("dynamodb")
        self.retention_s = float(retention_s)
        self.state = self._ddb.Table(state_table)
        self.results = self._ddb.Table(results_table)
        self.client = self._ddb.meta.client
        # How long flow_lock waits for a busy lock before giving up (the caller hands its chunk
        # back): well inside a dispatch Lambda's 60 s, well above a claim phase's < 1 s.
        self.lock_wait_s = 10.0

    # ---------------------------------------------------------------- retention
    def expiry(self, now: float | None = None) -> int:
        """`expires_at` for an item written now: DynamoDB TTL deletes it after the retention period."""
        return int((time.time() if now is None else now) + self.retention_s)

    @staticmethod
    def live(item: dict | None, now: float | None = None) -> bool:
        """False for an item whose `expires_at` has passed (TTL has not deleted it yet)."""
        if not item:
            return False
        exp = item.get("expires_at")
        return exp is None or float(exp) >= (time.time() if now is None else now)

    # ---------------------------------------------------------------- S3 object claims
    def claim_object(self, identity: str, job: str, lease_s: float, now: float | None = None) -> str:
        """Claim an S3 object version for ingest. Returns "new", "resume" (a crashed or paused
        ingest whose lease ran out) or "duplicate" (ingested or being ingested)."""
        now = time.time() if now is None else now
        key = {"pk": f"OBJ#{identity}", "sk": "-"}
        try:
            self.state.put_item(
                Item={**key, "job": job, "lease_until": _dec(now + lease_s), "done": False,
                      "expires_at": self.expiry(now)},
                ConditionExpression=Attr("pk").not_exists(),
            )
            return "new"
        except ClientError as err:
            if not _conditional_failed(err):
                raise
        try:
            self.state.update_item(
                Key=key,
                UpdateExpression="SET lease_until = :l",
                ConditionExpression="done = :f AND lease_until < :now",
                ExpressionAttributeValues={":l": _dec(now + lease_s), ":f": False, ":now": _dec(now)},
            )
            return "resume"
        except ClientError as err:
            if not _conditional_failed(err):
                raise
            return "duplicate"

    def renew_object(self, identity: str, lease_s: float, done: bool = False) -> None:
        self.state.update_item(
            Key={"pk": f"OBJ#{identity}", "sk": "-"},
            UpdateExpression="SET lease_until = :l, done = :d",
            ExpressionAttributeValues={":l": _dec(time.time() + lease_s), ":d": done},
        )

    # ---------------------------------------------------------------- file jobs
    def _job_stamp(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {**bound_job_attrs(attrs), "updated_at": int(time.time())}

    def put_job(self, job: str, attrs: dict) -> None:
        """Write a job item as given (bounded; `updated_at` now unless given). Ingest creates
        jobs with `create_job`, which also puts them on the active-jobs index."""
        item = {"pk": job_pk(job), "sk": "META", "updated_at": int(time.time()), **bound_job_attrs(attrs),
                "expires_at": self.expiry()}
        self.state.put_item(Item=item)

    def create_job(self, job: str, attrs: dict) -> bool:
        """The job's META item, written once (False: it exists already)."""
        item = {"pk": job_pk(job), "sk": "META", **self._job_stamp(attrs), "expires_at": self.expiry(),
                "active_shard": ACTIVE_SHARD}
        try:
            self.state.put_item(Item=item, ConditionExpression=Attr("pk").not_exists())
            return True
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise

    def get_job(self, job: str) -> dict | None:
        item = self.state.get_item(Key={"pk": job_pk(job), "sk": "META"}, ConsistentRead=True).get("Item")
        return _plain(item) if item and self.live(item) else None

    def update_job(self, job: str, **attrs: Any) -> dict:
        """SET the attributes (and `updated_at`); a job set `completed` leaves the active-jobs index."""
        update = _set_update(self._job_stamp(attrs))
        if attrs.get("completed"):
            update["UpdateExpression"] += " REMOVE active_shard"
        out = self.state.update_item(Key={"pk": job_pk(job), "sk": "META"}, ReturnValues="ALL_NEW", **update)
        return _plain(out["Attributes"])

    def cancel_job(self, job: str, reason: str) -> bool:
        """Mark a job cancelled (its input was deleted, or an operator cancelled it). Dispatch
        sends nothing more for it; its unsent rows end CANCELLED with this reason. Does nothing
        (False) to a job that is completed, already cancelled, or unknown."""
        try:
            self.state.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET cancelled_reason = :r, updated_at = :u",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(cancelled_reason) "
                                    "AND (attribute_not_exists(completed) OR completed = :f)",
                ExpressionAttributeValues={":r": _clip(reason, MAX_TEXT_CHARS), ":u": int(time.time()), ":f": False},
            )
            return True
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise

    # ---------------------------------------------------------------- key index
    @staticmethod
    def _key_pk(bucket: str, key: str) -> str:
        return f"KEY#{bucket}/{key}"

    def index_job(self, bucket: str, key: str, job: str, attrs: dict) -> None:
        """Remember that `job` reads this key (idempotent put)."""
        self.state.put_item(Item={"pk": self._key_pk(bucket, key), "sk": f"JOB#{job}", "job": job, **attrs,
                                  "expires_at": self.expiry()})

    def jobs_for_key(self, bucket: str, key: str) -> list[dict]:
        """The index items of the key's jobs (job, version, uploaded_at), oldest upload first."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(self._key_pk(bucket, key)) & Key("sk").begins_with("JOB#"),
            "ConsistentRead": True,
        }
        items: list[dict] = []
        while True:
            page = self.state.query(**kwargs)
            items.extend(_plain(i) for i in page.get("Items", []) if self.live(i))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(items, key=lambda i: str(i.get("uploaded_at", "")))

    def claim_report_name(self, bucket: str, key: str, stamp: str, job: str) -> bool:
        """Take a report time stamp for this key (True also when `job` holds it already)."""
        try:
            self.state.put_item(
                Item={"pk": self._key_pk(bucket, key), "sk": f"REPORT#{stamp}", "job": job,
                      "expires_at": self.expiry()},
                ConditionExpression="attribute_not_exists(pk) OR job = :j",
                ExpressionAttributeValues={":j": job},
            )
            return True
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise

    def add_to_job(self, job: str, **counters: int) -> dict:
        names = {f"#{k}": k for k in counters}
        values = {f":{k}": v for k, v in counters.items()}
        out = self.state.update_item(
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET updated_at = :now ADD " + ", ".join(f"#{k} :{k}" for k in counters),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":now": int(time.time())},
            ReturnValues="ALL_NEW",
        )
        return _plain(out["Attributes"])

    def count_settled(self, job: str, chunk: int, **counters: int) -> tuple[bool, dict]:
        """Count a settled chunk on its job, once: the chunk number goes into the job's
        `settled_set` in the same conditional update that increments `chunks_settled`, so a
        retry after a crash between settling and counting can simply call this again.
        Returns (counted now, the job item).

        The set stays small: chunks below `settled_below` are all counted and leave the set
        (`_compact_settled`), so it holds only the chunks settled out of order (a chunk
        retried for a while), not every chunk of a million-row file (400 KB item limit)."""
        names = {"#set": "settled_set", "#n": "chunks_settled", "#below": "settled_below",
                 **{f"#{k}": k for k in counters}}
        values = {":chunk": {chunk}, ":c": chunk, ":one": 1, ":now": int(time.time()),
                  **{f":{k}": v for k, v in counters.items()}}
        try:
            out = self.state.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET updated_at = :now ADD #set :chunk, #n :one"
                                 + "".join(f", #{k} :{k}" for k in counters),
                ConditionExpression="(attribute_not_exists(#set) OR NOT contains(#set, :c)) "
                                    "AND (attribute_not_exists(#below) OR #below <= :c)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
            meta = _plain(out["Attributes"])
            if len(meta.get("settled_set") or ()) > SETTLED_SET_COMPACT:
                self._compact_settled(job, meta)
            return True, meta
        except ClientError as err:
            if not _conditional_failed(err):
                raise
        return False, self.get_job(job) or {}

    def _compact_settled(self, job: str, meta: dict) -> None:
        """Move the settled set's contiguous run from `settled_below` up into `settled_below`
        (optimistic: a concurrent compaction wins, this one does nothing)."""
        below = int(meta.get("settled_below", 0))
        settled = {int(c) for c in meta.get("settled_set") or ()}
        new_below = below
        while new_below in settled:
            new_below += 1
        if new_below == below:
            return
        done = {c for c in settled if c < new_below}
        values: dict[str, Any] = {":new": new_below, ":done": done}
        if "settled_below" in meta:
            cond, values[":old"] = "settled_below = :old", below
        else:
            cond = "attribute_not_exists(settled_below)"
        try:
            self.state.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET settled_below = :new DELETE settled_set :done",
                ConditionExpression=cond, ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if not _conditional_failed(err):
                raise

    def claim_finalize(self, job: str) -> bool:
        """Exactly one caller wins the right to write the job's report."""
        try:
            self.state.update_item(
                Key={"pk": job_pk(job), "sk": "META"},
                UpdateExpression="SET finalizing = :t, updated_at = :now",
                ConditionExpression=Attr("finalizing").not_exists(),
                ExpressionAttributeValues={":t": True, ":now": int(time.time())},
            )
            return True
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise

    def release_finalize(self, job: str) -> None:
        self.state.update_item(Key={"pk": job_pk(job), "sk": "META"}, UpdateExpression="REMOVE finalizing")

    # ---------------------------------------------------------------- row outcomes
    def put_rows(self, job: str, rows: Iterable[dict]) -> int:
        """Write row outcome items (idempotent puts). Each dict has at least row and status."""
        n = 0
        expires = self.expiry()
        with self.state.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                item = {k: v for k, v in row.items() if v is not None and v != ""}
                if isinstance(item.get("reason"), str):
                    item["reason"] = _clip(item["reason"], MAX_TEXT_CHARS)
                item["pk"] = job_pk(job)
                item["sk"] = row_sk(row["row"])
                item["expires_at"] = expires
                batch.put_item(Item=item)
                n += 1
        return n

    def set_row_uuid(self, job: str, row: int, phonon_uuid: str) -> tuple[dict, bool]:
        """Record the phonon-uuid on the row's own item (creating a status-less "patch" item
        when the row's outcome lives in its chunk's outcome item), once: a row that already
        has another uuid keeps it and `RowUuidConflict` is raised; the same uuid again is a
        no-op. Returns (the item, whether this call set the uuid)."""
        try:
            out = self.state.update_item(
                Key={"pk": job_pk(job), "sk": row_sk(row)},
                UpdateExpression="SET phonon_uuid = :u, #r = :r, expires_at = if_not_exists(expires_at, :e)",
                ConditionExpression="attribute_not_exists(phonon_uuid) OR phonon_uuid = :u",
                ExpressionAttributeNames={"#r": "row"},
                ExpressionAttributeValues={":u": phonon_uuid, ":r": row, ":e": self.expiry()},
                ReturnValues="ALL_OLD",
            )
        except ClientError as err:
            if _conditional_failed(err):
                raise RowUuidConflict(job, row) from None
            raise
        old = _plain(out.get("Attributes") or {})
        newly_set = old.get("phonon_uuid") != phonon_uuid
        item = {**old, "phonon_uuid": phonon_uuid, "row": row}
        return item, newly_set

    def clear_row_uuid(self, job: str, row: int, phonon_uuid: str) -> None:
        """Take back a uuid `set_row_uuid` wrote (only while it is still that uuid)."""
        try:
            self.state.update_item(
                Key={"pk": job_pk(job), "sk": row_sk(row)}, UpdateExpression="REMOVE phonon_uuid",
                ConditionExpression="phonon_uuid = :u", ExpressionAttributeValues={":u": phonon_uuid})
        except ClientError as err:
            if not _conditional_failed(err):
                raise

    def put_outcomes(self, job: str, chunk: int, rows: list[dict], at: int) -> None:
        """A settled chunk's row outcomes (dicts with OUTCOME_FIELDS) as one item, keyed by its
        first row (idempotent: a re-settled chunk overwrites it). One write instead of one per
        row: the report reads a 1M-row file's outcomes as ~2,000 items instead of 1M."""
        if not rows:
            return
        blob = encode_outcomes(rows)
        if len(blob) > MAX_OUTCOME_BLOB:
            # A webhook may have patched a phonon-uuid onto a row item already: keep it.
            patched = {int(item["row"]): item.get("phonon_uuid", "") for item in self._batch_get(
                [{"pk": job_pk(job), "sk": row_sk(int(r["row"]))} for r in rows], "#r, phonon_uuid", {"#r": "row"})}
            self.put_rows(job, ({**r, "chunk": chunk, "at": at,
                                 "phonon_uuid": r.get("phonon_uuid") or patched.get(int(r["row"]), "")}
                                for r in rows))
            return
        first = min(int(r["row"]) for r in rows)
        self.state.put_item(Item={"pk": job_pk(job), "sk": outcome_sk(first), "chunk": chunk, "n": len(rows),
                                  "last_row": max(int(r["row"]) for r in rows), "at": at, "outcomes": blob,
                                  "expires_at": self.expiry()})

    def _batch_get(self, keys: list[dict], projection: str | None = None,
                   names: dict[str, str] | None = None) -> Iterator[dict]:
        """The state-table items at these keys that exist (BatchGetItem: 100 keys a request,
        unprocessed keys asked again), consistent reads."""
        extra: dict[str, Any] = {}
        if projection:
            extra = {"ProjectionExpression": projection, "ExpressionAttributeNames": names or {}}
        for i in range(0, len(keys), 100):
            request: dict | None = {self.state.name: {"Keys": keys[i:i + 100], "ConsistentRead": True, **extra}}
            while request:
                out = self._ddb.batch_get_item(RequestItems=request)
                for item in out.get("Responses", {}).get(self.state.name, []):
                    yield _plain(item)
                request = out.get("UnprocessedKeys") or None

    def find_outcome(self, job: str, row: int) -> dict | None:
        """The outcome item holding `row` (the one with the greatest first row <= row), or None."""
        out = self.state.query(
            KeyConditionExpression=Key("pk").eq(job_pk(job)) & Key("sk").between(outcome_sk(0), outcome_sk(row)),
            ScanIndexForward=False, Limit=1, ConsistentRead=True)
        items = out.get("Items", [])
        if not items or int(items[0].get("last_row", -1)) < row or not self.live(items[0]):
            return None
        return _plain(items[0])

    def _query(self, job: str, prefix: str) -> Iterator[dict]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(job_pk(job)) & Key("sk").begins_with(prefix),
            "ConsistentRead": True,
        }
        now = time.time()
        while True:
            page = self.state.query(**kwargs)
            for item in page.get("Items", []):
                if self.live(item, now):
                    yield _plain(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def iter_rows(self, job: str) -> Iterator[dict]:
        """Every ROW# item of a job, in row order, a page at a time (bounded memory)."""
        return self._query(job, "ROW#")

    def iter_outcomes(self, job: str) -> Iterator[dict]:
        """Every row's outcome, in row order, merged from the chunks' outcome items and the row
        items (bounded memory: both are read a page at a time, in row order, and merged). A
        chunk's outcome wins over a row item of the same row (e.g. a row an aborted run filled
        in as not sent, whose chunk settled after all); a phonon-uuid only a webhook patch
        carries is added to it."""
        def from_chunks() -> Iterator[tuple[int, int, dict]]:
            for item in self._query(job, "OUT#"):
                for r in decode_outcomes(item["outcomes"]):
                    yield int(r["row"]), 0, r

        def from_rows() -> Iterator[tuple[int, int, dict]]:
            for item in self.iter_rows(job):
                yield int(item["row"]), 1, item

        current: dict | None = None
        for row, _, item in heapq.merge(from_chunks(), from_rows(), key=lambda t: (t[0], t[1])):
            if current is not None and int(current["row"]) == row:
                if not current.get("phonon_uuid") and item.get("phonon_uuid"):
                    current["phonon_uuid"] = item["phonon_uuid"]
                continue
            if current is not None:
                yield current
            current = dict(item)
        if current is not None:
            yield current

    # ---------------------------------------------------------------- chunk ledger
    def claim_chunk(self, job: str, chunk: int, lease_s: float, now: float | None = None) -> ChunkClaim:
        """Take the chunk's lease. A DONE chunk is never sent again; a chunk whose holder died is
        taken over once its lease runs out (the resend is byte-identical, so Phonon answers 201)."""
        now = time.time() if now is None else now
        key = {"pk": job_pk(job), "sk": chunk_sk(chunk)}
        try:
            out = self.state.update_item(
                Key=key,
                UpdateExpression="SET #s = :ip, lease_until = :l, expires_at = :e ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR (#s <> :done AND (#s <> :ip OR lease_until < :now))",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":ip": "IN_PROGRESS", ":done": "DONE", ":l": _dec(now + lease_s),
                    ":now": _dec(now), ":one": 1, ":e": self.expiry(now),
                },
                ReturnValues="ALL_NEW",
            )
            item = _plain(out["Attributes"])
            return ChunkClaim("claimed", attempts=item.get("attempts", 1), item=item)
        except ClientError as err:
            if not _conditional_failed(err):
                raise
        item = _plain(self.state.get_item(Key=key, ConsistentRead=True).get("Item") or {})
        if item.get("state") == "DONE":
            return ChunkClaim("done", attempts=item.get("attempts", 0), item=item)
        return ChunkClaim("busy", attempts=item.get("attempts", 0),
                          lease_left_s=max(0.0, float(item.get("lease_until", now)) - now), item=item)

    def note_chunk(self, job: str, chunk: int, **attrs: Any) -> None:
        """Remember facts about a chunk while it is in progress (e.g. that a send may have been delivered)."""
        self.state.update_item(Key={"pk": job_pk(job), "sk": chunk_sk(chunk)}, **_set_update(attrs))

    def release_chunk(self, job: str, chunk: int) -> None:
        """Give back the lease of a chunk still IN_PROGRESS (its holder failed and the message
        will be retried): the retry need not wait for the lease to run out. A chunk settled
        meanwhile is left as it is."""
        try:
            self.state.update_item(
                Key={"pk": job_pk(job), "sk": chunk_sk(chunk)},
                UpdateExpression="SET #s = :retry, lease_until = :zero",
                ConditionExpression="#s = :ip",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":retry": "RETRY", ":zero": 0, ":ip": "IN_PROGRESS"})
        except ClientError as err:
            if not _conditional_failed(err):
                raise

    def settle_chunk(self, job: str, chunk: int, state: str, **attrs: Any) -> None:
        """Record a chunk's final state: DONE, or FAILED when its retries ran out (a FAILED
        chunk can be claimed again after an operator's redrive). Counting it on the job is
        `count_settled`'s job, idempotently."""
        attrs = {**attrs, "state": state, "settled": True, "lease_until": 0, "expires_at": self.expiry()}
        self.state.update_item(Key={"pk": job_pk(job), "sk": chunk_sk(chunk)}, **_set_update(attrs))

    def settle_open_chunk(self, job: str, chunk: int, state: str, **attrs: Any) -> bool:
        """Settle a chunk without sending it, unless it is DONE already (sent and recorded):
        False then. A chunk another dispatcher holds right now is settled all the same: its
        holder's own settle overwrites the outcome it records (the caller ends unsent rows,
        e.g. after an interrupted run, when nobody should be sending any more)."""
        attrs = {**attrs, "state": state, "settled": True, "lease_until": 0, "expires_at": self.expiry()}
        update = _set_update(attrs)
        update["ExpressionAttributeValues"][":done_state"] = "DONE"
        try:
            self.state.update_item(Key={"pk": job_pk(job), "sk": chunk_sk(chunk)},
                                   ConditionExpression="attribute_not_exists(#state) OR #state <> :done_state",
                                   **update)
            return True
        except ClientError as err:
            if not _conditional_failed(err):
                raise
            return False

    def cancelled_reason(self, job: str) -> str:
        """The job's `cancelled_reason` ("" when it is not cancelled, or there is no such job):
        read by dispatch before it sends a chunk (one consistent GetItem of that one attribute)."""
        item = self.state.get_item(Key={"pk": job_pk(job), "sk": "META"}, ConsistentRead=True,
                                   ProjectionExpression="#c", ExpressionAttributeNames={"#c": "cancelled_reason"},
                                   ).get("Item") or {}
        return str(item.get("cancelled_reason") or "")

    # ---------------------------------------------------------------- dedupe claims
    def claim_dedupe(self, flow: str, claims: list[tuple[str, str]], window_s: float,
                     now: float | None = None) -> dict[str, str]:
        """Claim each (hash, owner) for the window. Returns {hash: other owner} for the claims
        that another owner already holds (those calls are duplicates). Claims we already hold
        are kept, so a retry of the same chunk decides the same way.

        Race-free without a conditional write per call: every claim phase of a flow runs under
        that flow's dedupe lock (one conditional write to take it, one to give it back), and
        inside it the claims are read with BatchGetItem and written with BatchWriteItem. A
        chunk of 500 calls costs ~27 requests instead of ~500 conditional puts (or
        TransactWriteItems, which fails whole on one conflict and which moto implements by
        copying the entire table)."""
        now = time.time() if now is None else now
        with self.flow_lock(f"DEDUPE-LOCK#{flow}"):
            existing = self._get_claims(list(dict(claims)))
            conflicts: dict[str, str] = {}
            new: list[dict] = []
            for h, owner in claims:
                old = existing.get(h)
                if old is not None and float(old.get("expires", 0)) >= now and old.get("owner") != owner:
                    conflicts[h] = str(old.get("owner"))
                elif old is None or old.get("owner") != owner or float(old.get("expires", 0)) < now:
                    # TTL: an hour after the window, never later than the data retention
                    new.append({"pk": f"DEDUPE#{h}", "sk": "-", "owner": owner, "expires": _dec(now + window_s),
                                "expires_at": min(int(now + window_s) + 3600, self.expiry(now))})
            if new:
                with self.state.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
                    for item in new:
                        batch.put_item(Item=item)
        return conflicts

    def _get_claims(self, hashes: list[str]) -> dict[str, dict]:
        keys = [{"pk": f"DEDUPE#{h}", "sk": "-"} for h in hashes]
        return {item["pk"][len("DEDUPE#"):]: item for item in self._batch_get(keys)}

    @contextmanager
    def flow_lock(self, name: str, lease_s: float = 30.0, wait_s: float | None = None) -> Iterator[None]:
        """A short mutual-exclusion lease (conditional write). A holder that died is taken over
        when its lease runs out; the claim phase it guards takes well under a second.

        Threads of one process queue on a local lock first, so each process (a Lambda
        instance; the local run) polls the shared lease with one thread at most: 30 threads
        polling it at once spent the embedded DynamoDB's whole time on failed conditional
        puts and starved every other request."""
        wait_s = self.lock_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s  # one budget for both: a dispatcher's time is short
        with _LOCAL_LOCKS_GUARD:
            local = _LOCAL_LOCKS.setdefault(name, threading.Lock())
        if not local.acquire(timeout=wait_s):
            raise TimeoutError(f"could not take {name} within {wait_s:.0f} s (this process)")
        try:
            with self._shared_lock(name, lease_s, max(0.0, deadline - time.monotonic())):
                yield
        finally:
            local.release()

    @contextmanager
    def _shared_lock(self, name: str, lease_s: float, wait_s: float) -> Iterator[None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            now = time.time()
            try:
                self.state.put_item(
                    Item={"pk": name, "sk": "-", "token": token, "lease_until": _dec(now + lease_s)},
                    ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                    ExpressionAttributeValues={":now": _dec(now)},
                )
                break
            except ClientError as err:
                if not _conditional_failed(err):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not take {name} within {wait_s:.0f} s")
            time.sleep(delay + random.uniform(0, delay))
            delay = min(0.2, delay * 2)
        try:
            yield
        finally:
            try:
                self.state.delete_item(Key={"pk": name, "sk": "-"}, ConditionExpression="#t = :t",
                                       ExpressionAttributeNames={"#t": "token"},
                                       ExpressionAttributeValues={":t": token})
            except ClientError as err:
                if not _conditional_failed(err):
                    raise

    def release_dedupe(self, flow: str, claims: list[tuple[str, str]]) -> None:
        """Give back claims of calls that ended FAILED, so a later send is not called a duplicate."""
        with self.flow_lock(f"DEDUPE-LOCK#{flow}"):
            self._release(claims)

    def _release(self, claims: list[tuple[str, str]]) -> None:
        for h, owner in claims:
            try:
                self.state.delete_item(
                    Key={"pk": f"DEDUPE#{h}", "sk": "-"},
                    ConditionExpression="#o = :me",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":me": owner},
                )
            except ClientError as err:
                if not _conditional_failed(err):
                    raise

    # ---------------------------------------------------------------- small shared items
    def get_item(self, pk: str) -> dict | None:
        item = self.state.get_item(Key={"pk": pk, "sk": "-"}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def put_if(self, pk: str, attrs: dict, expect: dict | None) -> bool:
        """Optimistic write of a small shared item: succeeds only if the item still has the
        attribute values in `expect` (None: only if it does not exist)."""
        item = {"pk": pk, "sk": "-", **{k: (_dec(v) if isinstance(v, float) else v) for k, v in attrs.items()}}
        kwargs: dict[str, Any] = {"Item": item}
        if expect is None:
            kwargs["ConditionExpression"] = Attr("pk").not_exists()
        else:
            cond = None
            for k, v in expect.items():
                c = Attr(k).eq(_dec(v) if isinstance(v, float) else v)
                cond = c if cond is None else cond & c
            kwargs["ConditionExpression"] = cond
        try:
            self.state.put_item(**kwargs)
            return True
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise

    # ---------------------------------------------------------------- results
    def put_results(self, items: Iterable[dict]) -> int:
        n = 0
        with self.results.batch_writer(overwrite_by_pkeys=["phonon-uuid"]) as batch:
            for item in items:
                batch.put_item(Item={k: v for k, v in item.items() if v is not None and v != ""})
                n += 1
        return n

    def upsert_result(self, uuid: str, attrs: dict) -> bool:
        """Add a flow-end push's facts to the uuid's results item, keeping its binding.

        A results item is bound once: to (`job`, `row`) when the push matched a row (or the
        dispatcher recorded the uuid from the API's answer), else to its correlation `ref`
        (absent when the push had none). With `job` and `row` in `attrs` the write succeeds
        only if the item is unbound, bound to that same row, or unmatched with the same (or no)
        ref — and then the `unmatched` mark is removed; without them, only if the item has no
        row and the same ref. Returns False, writing nothing, when the binding differs."""
        attrs = {k: v for k, v in attrs.items() if v is not None and v != ""}
        attrs["expires_at"] = self.expiry()
        names = {f"#a{i}": k for i, k in enumerate(attrs)} | {"#job": "job", "#ref": "ref"}
        values: dict[str, Any] = {f":v{i}": (_dec(v) if isinstance(v, float) else v)
                                  for i, v in enumerate(attrs.values())}
        update = "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attrs)))
        same_ref = "(attribute_not_exists(#ref) OR #ref = :ref)" if attrs.get("ref") else "attribute_not_exists(#ref)"
        if attrs.get("ref"):
            values[":ref"] = attrs["ref"]
        if "job" in attrs and "row" in attrs:
            condition = f"(attribute_not_exists(#job) AND {same_ref}) OR (#job = :job AND #row = :row)"
            values |= {":job": attrs["job"], ":row": attrs["row"]}
            names |= {"#row": "row", "#unmatched": "unmatched"}
            update += " REMOVE #unmatched"
        else:
            condition = f"attribute_not_exists(#job) AND {same_ref}"
        try:
            self.results.update_item(
                Key={"phonon-uuid": uuid}, UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise
        return True

    def get_result(self, uuid: str) -> dict | None:
        item = self.results.get_item(Key={"phonon-uuid": uuid}).get("Item")
        return _plain(item) if item else None
