"""The dedupe repository: a call claimed for the dedupe window (DEDUPE#<hash>, its owner is the
`<job>.<row>` that sends it) and the per-flow lock that serialises claim phases."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from botocore.exceptions import ClientError

from .common import (
    DEDUPE,
    DEDUPE_LOCK,
    DEDUPE_LOCK_WAIT_S,
    Retention,
    batch_get,
    conditional_failed,
    dec,
    plain,
)


class DedupeRepository(Protocol):
    lock_wait_s: float

    def claim_dedupe(self, flow: str, claims: list[tuple[str, str]], window_s: float,
                     now: float | None = None) -> dict[str, str]:
        """Claim each (hash, owner) for the window; {hash: other owner} for the claims another
        owner holds within its window (duplicates). An expired claim counts as absent."""
        ...

    def release_dedupe(self, flow: str, claims: list[tuple[str, str]]) -> None:
        """Give back the claims each owner holds (others' claims are left alone)."""
        ...

    def get_claim(self, hash_: str) -> dict | None:
        """The stored claim item (owner, expires, expires_at), expired or not."""
        ...

    def flow_lock(self, name: str, lease_s: float = 30.0, wait_s: float | None = None) -> AbstractContextManager[None]:
        ...


def new_claim(hash_: str, owner: str, window_s: float, now: float, retention: Retention) -> dict:
    """A claim item for the window; TTL an hour after the window, never later than the data
    retention."""
    return {"pk": DEDUPE + hash_, "sk": "-", "owner": owner, "expires": now + window_s,
            "expires_at": min(int(now + window_s) + 3600, retention.expiry(now))}


def decide(claims: list[tuple[str, str]], existing: dict[str, dict], now: float) -> tuple[dict[str, str], list]:
    """The claim phase's decision over the claims read: (conflicts, the (hash, owner) pairs to
    write). Another owner's claim within its window is a conflict; our own live claim is kept
    as it is (a retry decides the same way and does not stretch the window); an expired claim
    is treated as absent (TTL deletes late) and is taken."""
    conflicts: dict[str, str] = {}
    new: list[tuple[str, str]] = []
    for h, owner in claims:
        old = existing.get(h)
        alive = old is not None and float(old.get("expires", 0)) >= now
        if alive and old is not None and old.get("owner") != owner:
            conflicts[h] = str(old.get("owner"))
        elif not alive:
            new.append((h, owner))
    return conflicts, new


class LocalLocks:
    """Threads of one process queue on a local lock per name first, so each process (a Lambda
    instance; the local run) polls the shared lease with one thread at most: 30 threads polling
    it at once spent the embedded DynamoDB's whole time on failed conditional puts and starved
    every other request. Instance state of one repository (no module globals)."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


class DynamoDedupe:
    def __init__(self, resource: Any, table: Any, retention: Retention):
        self._ddb = resource
        self.table = table
        self.retention = retention
        self._local = LocalLocks()
        # How long flow_lock waits for a busy lock before giving up (the caller hands its chunk
        # back): well inside a dispatch Lambda's 60 s, well above a claim phase's < 1 s.
        self.lock_wait_s = DEDUPE_LOCK_WAIT_S

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
        now = self.retention.now() if now is None else now
        with self.flow_lock(DEDUPE_LOCK + flow):
            keys = [{"pk": DEDUPE + h, "sk": "-"} for h in dict(claims)]
            existing = {item["pk"][len(DEDUPE):]: item for item in batch_get(self._ddb, self.table, keys)}
            conflicts, new = decide(claims, existing, now)
            if new:
                with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
                    for h, owner in new:
                        item = new_claim(h, owner, window_s, now, self.retention)
                        batch.put_item(Item={**item, "expires": dec(item["expires"])})
        return conflicts

    def release_dedupe(self, flow: str, claims: list[tuple[str, str]]) -> None:
        """Give back claims of calls that ended FAILED, so a later send is not called a duplicate."""
        with self.flow_lock(DEDUPE_LOCK + flow):
            for h, owner in claims:
                try:
                    self.table.delete_item(
                        Key={"pk": DEDUPE + h, "sk": "-"},
                        ConditionExpression="#o = :me",
                        ExpressionAttributeNames={"#o": "owner"},
                        ExpressionAttributeValues={":me": owner},
                    )
                except ClientError as err:
                    if not conditional_failed(err):
                        raise

    def get_claim(self, hash_: str) -> dict | None:
        item = self.table.get_item(Key={"pk": DEDUPE + hash_, "sk": "-"}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    @contextmanager
    def flow_lock(self, name: str, lease_s: float = 30.0, wait_s: float | None = None) -> Iterator[None]:
        """A short mutual-exclusion lease (conditional write). A holder that died is taken over
        when its lease runs out; the claim phase it guards takes well under a second. Threads
        of this process queue on a local lock first (`LocalLocks`)."""
        wait_s = self.lock_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s  # one budget for both: a dispatcher's time is short
        local = self._local.get(name)
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
            now = self.retention.now()
            try:
                self.table.put_item(
                    Item={"pk": name, "sk": "-", "token": token, "lease_until": dec(now + lease_s)},
                    ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                    ExpressionAttributeValues={":now": dec(now)},
                )
                break
            except ClientError as err:
                if not conditional_failed(err):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not take {name} within {wait_s:.0f} s")
            time.sleep(delay + random.uniform(0, delay))
            delay = min(0.2, delay * 2)
        try:
            yield
        finally:
            try:
                self.table.delete_item(Key={"pk": name, "sk": "-"}, ConditionExpression="#t = :t",
                                       ExpressionAttributeNames={"#t": "token"},
                                       ExpressionAttributeValues={":t": token})
            except ClientError as err:
                if not conditional_failed(err):
                    raise
