"""The rows repository: a job's row outcomes — ROW# items (rejected rows, rows an aborted run
filled in, webhook "patches" carrying a phonon-uuid) and OUT# items (a settled chunk's
outcomes in one compressed item)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from .common import (
    MAX_OUTCOME_BLOB,
    MAX_TEXT_CHARS,
    Retention,
    RowUuidConflict,
    batch_get,
    clip,
    conditional_failed,
    decode_outcomes,
    encode_outcomes,
    job_pk,
    outcome_sk,
    paged_query,
    plain,
    row_sk,
)


class RowsRepository(Protocol):
    max_blob: int  # a chunk's compressed outcomes over this many bytes are written as row items

    def put_rows(self, job: str, rows: Iterable[dict]) -> int: ...

    def put_outcomes(self, job: str, chunk: int, rows: list[dict], at: int) -> None: ...

    def find_outcome(self, job: str, row: int) -> dict | None: ...

    def get_outcome(self, job: str, row: int) -> dict | None:
        """One row's outcome record, as `iter_outcomes` gives it (`merge_outcomes`: its chunk's
        outcome with what the webhook recorded on the row's own item), or None when neither
        item exists. Two reads: the chunk's outcome item and the row item."""
        ...

    def iter_rows(self, job: str) -> Iterator[dict]: ...

    def iter_outcomes(self, job: str) -> Iterator[dict]: ...

    def iter_chunk_items(self, job: str) -> Iterator[dict]:
        """Every settled chunk's outcome item as stored (`chunk`, `n` rows, settled `at`, the
        encoded `outcomes`), in row order: a job's progress over time (`phonon-outbound
        status`). A chunk too big for one item has row items instead and is not among them."""
        ...

    def set_row_uuid(self, job: str, row: int, phonon_uuid: str) -> tuple[dict, bool]: ...

    def clear_row_uuid(self, job: str, row: int, phonon_uuid: str) -> None: ...

    def record_outcome(self, job: str, row: int, phonon_uuid: str, fields: dict) -> tuple[dict, bool]:
        """The row's phonon-uuid (`set_row_uuid`'s rule) and its flow-end outcome (OUTCOME_ATTRS)
        on the row's own item, in one conditional write. Returns (the item as it was before,
        with the uuid, whether this call recorded the outcome: False for a replay)."""
        ...

    def any_without_outcome(self, job: str, rows: Iterable[int]) -> bool: ...


# A row's flow-end outcome on its ROW# item (docs/contract.md, "Outcomes").
OUTCOME_ATTRS = ("outcome", "duration", "attempts", "hangup_cause", "dtmf", "ended_at", "delivery", "outcome_at",
                 "outcome_src")
# Kept from the first record of an outcome (a pull after the push does not say it came first).
FIRST_ONLY = ("outcome_at", "outcome_src")


def outcome_fields(fields: dict) -> dict:
    """The outcome attributes of `fields` that are set (others ignored; texts bounded)."""
    out = {k: fields[k] for k in OUTCOME_ATTRS if fields.get(k) not in (None, "")}
    for k, v in out.items():
        if isinstance(v, str):
            out[k] = clip(v, MAX_TEXT_CHARS)
    return out


def row_item(job: str, row: dict, expires: int) -> dict:
    """The ROW# item `put_rows` writes for one row dict (empty values dropped, reason bounded)."""
    item = {k: v for k, v in row.items() if v is not None and v != ""}
    if isinstance(item.get("reason"), str):
        item["reason"] = clip(item["reason"], MAX_TEXT_CHARS)
    item["pk"] = job_pk(job)
    item["sk"] = row_sk(row["row"])
    item["expires_at"] = expires
    return item


def merge_outcomes(chunk_items: Iterable[dict], row_items: Iterable[dict]) -> Iterator[dict]:
    """Every row's outcome, in row order, from OUT# items and ROW# items (both in row order).
    A chunk's outcome wins over a row item of the same row (e.g. a row an aborted run filled
    in as not sent, whose chunk settled after all); a phonon-uuid only a webhook patch carries
    is added to it."""
    def from_chunks() -> Iterator[tuple[int, int, dict]]:
        for item in chunk_items:
            for r in decode_outcomes(item["outcomes"]):
                yield int(r["row"]), 0, r

    def from_rows() -> Iterator[tuple[int, int, dict]]:
        for item in row_items:
            if "row" not in item:
                # A key-only item: moto's UpdateItem puts the bare key first and applies the SET
                # after, so a concurrent Query can see it (DynamoDB never shows one). It says
                # nothing yet; the update that creates it brings the row with it.
                continue
            yield int(item["row"]), 1, item

    current: dict | None = None
    for row, _, item in heapq.merge(from_chunks(), from_rows(), key=lambda t: (t[0], t[1])):
        if current is not None and int(current["row"]) == row:
            if not current.get("phonon_uuid") and item.get("phonon_uuid"):
                current["phonon_uuid"] = item["phonon_uuid"]
            for k in OUTCOME_ATTRS:  # the webhook's outcome on the row's patch item
                if k in item and k not in current:
                    current[k] = item[k]
            continue
        if current is not None:
            yield current
        current = dict(item)
    if current is not None:
        yield current


def one_outcome(row: int, chunk_item: dict | None, row_item: dict | None) -> dict | None:
    """`get_outcome` from the two items read: the row's entry of `merge_outcomes` over them (the
    same rules as a whole job's, so a lookup and the report never disagree)."""
    merged = merge_outcomes([chunk_item] if chunk_item is not None else [], [row_item] if row_item is not None else [])
    return next((r for r in merged if int(r["row"]) == row), None)


def first_without_outcome(rows: Iterable[int], find_outcome: Any, row_status: Any) -> bool:
    """`any_without_outcome` over two lookups: chunks hold increasing, disjoint row ranges, so a
    row inside a found outcome item's range is its; otherwise the row item must have a status."""
    known: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if any(first <= row <= last for first, last in known):
            continue
        item = find_outcome(row)
        if item is not None:
            known.append((int(str(item["sk"])[len("OUT#"):]), int(item["last_row"])))
            continue
        if not row_status(row):
            return True
    return False


class DynamoRows:
    def __init__(self, resource: Any, table: Any, retention: Retention):
        self._ddb = resource
        self.table = table
        self.retention = retention
        self.max_blob = MAX_OUTCOME_BLOB  # a chunk's outcomes over this many bytes go to row items

    def put_rows(self, job: str, rows: Iterable[dict]) -> int:
        """Write row outcome items (idempotent puts). Each dict has at least row and status."""
        n = 0
        expires = self.retention.expiry()
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.put_item(Item=row_item(job, row, expires))
                n += 1
        return n

    def set_row_uuid(self, job: str, row: int, phonon_uuid: str) -> tuple[dict, bool]:
        """Record the phonon-uuid on the row's own item (creating a status-less "patch" item
        when the row's outcome lives in its chunk's outcome item), once: a row that already
        has another uuid keeps it and `RowUuidConflict` is raised; the same uuid again is a
        no-op. Returns (the item, whether this call set the uuid)."""
        try:
            out = self.table.update_item(
                Key={"pk": job_pk(job), "sk": row_sk(row)},
                UpdateExpression="SET phonon_uuid = :u, #r = :r, expires_at = if_not_exists(expires_at, :e)",
                ConditionExpression="attribute_not_exists(phonon_uuid) OR phonon_uuid = :u",
                ExpressionAttributeNames={"#r": "row"},
                ExpressionAttributeValues={":u": phonon_uuid, ":r": row, ":e": self.retention.expiry()},
                ReturnValues="ALL_OLD",
            )
        except ClientError as err:
            if conditional_failed(err):
                raise RowUuidConflict(job, row) from None
            raise
        old = plain(out.get("Attributes") or {})
        newly_set = old.get("phonon_uuid") != phonon_uuid
        item = {**old, "phonon_uuid": phonon_uuid, "row": row}
        return item, newly_set

    def record_outcome(self, job: str, row: int, phonon_uuid: str, fields: dict) -> tuple[dict, bool]:
        """`set_row_uuid` plus the outcome attributes, in one conditional update: the uuid is
        bound once (another uuid: `RowUuidConflict`, nothing written); the outcome's fields are
        written again by a replay (the same push says the same), `outcome_at` / `outcome_src`
        only the first time. Returns (the item as it was, with the uuid and row; newly recorded)."""
        attrs = outcome_fields(fields)
        names = {"#r": "row", **{f"#{k}": k for k in attrs}}
        values: dict[str, Any] = {":u": phonon_uuid, ":r": row, ":e": self.retention.expiry(),
                                  **{f":{k}": v for k, v in attrs.items()}}
        sets = ["phonon_uuid = :u", "#r = :r", "expires_at = if_not_exists(expires_at, :e)",
                *(f"#{k} = if_not_exists(#{k}, :{k})" if k in FIRST_ONLY else f"#{k} = :{k}" for k in attrs)]
        try:
            out = self.table.update_item(
                Key={"pk": job_pk(job), "sk": row_sk(row)}, UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_not_exists(phonon_uuid) OR phonon_uuid = :u",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_OLD")
        except ClientError as err:
            if conditional_failed(err):
                raise RowUuidConflict(job, row) from None
            raise
        old = plain(out.get("Attributes") or {})
        return {**old, "phonon_uuid": phonon_uuid, "row": row}, "outcome_at" not in old

    def clear_row_uuid(self, job: str, row: int, phonon_uuid: str) -> None:
        """Take back a uuid `set_row_uuid` / `record_outcome` wrote, with its outcome (only while
        it is still that uuid)."""
        try:
            self.table.update_item(
                Key={"pk": job_pk(job), "sk": row_sk(row)},
                UpdateExpression="REMOVE phonon_uuid, " + ", ".join(f"#{k}" for k in OUTCOME_ATTRS),
                ExpressionAttributeNames={f"#{k}": k for k in OUTCOME_ATTRS},
                ConditionExpression="phonon_uuid = :u", ExpressionAttributeValues={":u": phonon_uuid})
        except ClientError as err:
            if not conditional_failed(err):
                raise

    def put_outcomes(self, job: str, chunk: int, rows: list[dict], at: int) -> None:
        """A settled chunk's row outcomes (dicts with OUTCOME_FIELDS) as one item, keyed by its
        first row (idempotent: a re-settled chunk overwrites it). One write instead of one per
        row: the report reads a 1M-row file's outcomes as ~2,000 items instead of 1M."""
        if not rows:
            return
        blob = encode_outcomes(rows)
        if len(blob) > self.max_blob:
            # A webhook may have patched a phonon-uuid onto a row item already: keep it.
            patched = {int(item["row"]): item.get("phonon_uuid", "") for item in batch_get(
                self._ddb, self.table, [{"pk": job_pk(job), "sk": row_sk(int(r["row"]))} for r in rows],
                "#r, phonon_uuid", {"#r": "row"})}
            self.put_rows(job, ({**r, "chunk": chunk, "at": at,
                                 "phonon_uuid": r.get("phonon_uuid") or patched.get(int(r["row"]), "")}
                                for r in rows))
            return
        first = min(int(r["row"]) for r in rows)
        self.table.put_item(Item={"pk": job_pk(job), "sk": outcome_sk(first), "chunk": chunk, "n": len(rows),
                                  "last_row": max(int(r["row"]) for r in rows), "at": at, "outcomes": blob,
                                  "expires_at": self.retention.expiry()})

    def find_outcome(self, job: str, row: int) -> dict | None:
        """The outcome item holding `row` (the one with the greatest first row <= row), or None."""
        out = self.table.query(
            KeyConditionExpression=Key("pk").eq(job_pk(job)) & Key("sk").between(outcome_sk(0), outcome_sk(row)),
            ScanIndexForward=False, Limit=1, ConsistentRead=True)
        items = out.get("Items", [])
        if not items or int(items[0].get("last_row", -1)) < row or not self.retention.live(items[0]):
            return None
        return plain(items[0])

    def get_outcome(self, job: str, row: int) -> dict | None:
        item = self.table.get_item(Key={"pk": job_pk(job), "sk": row_sk(row)}, ConsistentRead=True).get("Item")
        row_item = plain(item) if item is not None and self.retention.live(item) else None
        return one_outcome(row, self.find_outcome(job, row), row_item)

    def _query(self, job: str, prefix: str) -> Iterator[dict]:
        now = self.retention.now()
        for item in paged_query(self.table, ConsistentRead=True,
                                KeyConditionExpression=Key("pk").eq(job_pk(job)) & Key("sk").begins_with(prefix)):
            if self.retention.live(item, now):
                yield plain(item)

    def iter_rows(self, job: str) -> Iterator[dict]:
        """Every ROW# item of a job, in row order, a page at a time (bounded memory)."""
        return self._query(job, "ROW#")

    def iter_outcomes(self, job: str) -> Iterator[dict]:
        """Every row's outcome, in row order (`merge_outcomes`), bounded memory: both kinds of
        item are read a page at a time."""
        return merge_outcomes(self._query(job, "OUT#"), self.iter_rows(job))

    def iter_chunk_items(self, job: str) -> Iterator[dict]:
        return self._query(job, "OUT#")

    def any_without_outcome(self, job: str, rows: Iterable[int]) -> bool:
        """Whether any of these rows of a job (dedupe claim owners) has no outcome recorded yet:
        neither in a chunk's outcome item nor as a row item with a status. Stops at the first."""
        def row_status(row: int) -> Any:
            item = self.table.get_item(Key={"pk": job_pk(job), "sk": row_sk(row)}, ConsistentRead=True,
                                       ProjectionExpression="#s", ExpressionAttributeNames={"#s": "status"},
                                       ).get("Item") or {}
            return item.get("status")

        return first_without_outcome(rows, lambda row: self.find_outcome(job, row), row_status)
