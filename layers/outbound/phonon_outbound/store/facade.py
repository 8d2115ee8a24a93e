"""`Store`: the six repositories under one name, and today's methods forwarded to them.

Why the forwarding exists: every service (ingest, dispatch, webhook, jobs, watchdog, the local
runner) calls `store.<method>` today. The callers move to the narrow repository each needs
(`store.jobs`, `store.rows`, `store.ledger`, `store.dedupe`, `store.limits`,
`store.results`) one at a time; until the last one has moved, these methods keep them all
working unchanged. New code takes the repository it needs, not `Store`. Each forwarder looks
its repository up at call time, so a wrapper set on a repository (the local runner watches
`store.dedupe.claim_dedupe`) sees the calls that still come through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import boto3

from .common import (
    DEDUPE,
    DEFAULT_RETENTION_S,
    FINALIZE_LEASE_S,
    ChunkClaim,
    Clock,
    Retention,
    live,
)
from .dedupe import DedupeRepository, DynamoDedupe
from .jobs import DynamoJobs, JobsRepository
from .ledger import DynamoLedger, LedgerRepository
from .limits import DynamoLimits, LimitsRepository
from .results import DynamoResults, ResultsRepository
from .rows import DynamoRows, RowsRepository


class Store:
    """The DynamoDB store: `Store(state_table, results_table, resource)`. `MemoryStore()`
    (store/memory.py) is the same facade over the in-memory fakes."""

    jobs: JobsRepository
    rows: RowsRepository
    ledger: LedgerRepository
    dedupe: DedupeRepository
    limits: LimitsRepository
    results: ResultsRepository

    def __init__(self, state_table: str, results_table: str, resource: Any = None,
                 retention_s: float = DEFAULT_RETENTION_S, clock: Clock = time.time):
        ddb = resource or boto3.resource("dynamodb")
        self.state = ddb.Table(state_table)  # the state table itself (tests, the watchdog's index query)
        self.client = ddb.meta.client
        retention = Retention(retention_s, clock)
        jobs = DynamoJobs(self.state, retention)
        self._compose(retention, jobs=jobs, rows=DynamoRows(ddb, self.state, retention),
                      ledger=DynamoLedger(self.state, retention, jobs),
                      dedupe=DynamoDedupe(ddb, self.state, retention), limits=DynamoLimits(self.state),
                      results=DynamoResults(ddb.Table(results_table), retention))

    def _compose(self, retention: Retention, *, jobs: JobsRepository, rows: RowsRepository,
                 ledger: LedgerRepository, dedupe: DedupeRepository, limits: LimitsRepository,
                 results: ResultsRepository) -> None:
        self.retention = retention
        self.jobs, self.rows, self.ledger = jobs, rows, ledger
        self.dedupe, self.limits, self.results = dedupe, limits, results

    # ---------------------------------------------------------------- retention
    @property
    def retention_s(self) -> float:
        return self.retention.retention_s

    def expiry(self, now: float | None = None) -> int:
        return self.retention.expiry(now)

    @staticmethod
    def live(item: dict | None, now: float | None = None) -> bool:
        return live(item, now)

    # ---------------------------------------------------------------- jobs
    def claim_object(self, identity: str, job: str, lease_s: float, now: float | None = None) -> str:
        return self.jobs.claim_object(identity, job, lease_s, now)

    def renew_object(self, identity: str, lease_s: float, done: bool = False) -> None:
        self.jobs.renew_object(identity, lease_s, done)

    def put_job(self, job: str, attrs: dict) -> None:
        self.jobs.put_job(job, attrs)

    def create_job(self, job: str, attrs: dict) -> bool:
        return self.jobs.create_job(job, attrs)

    def get_job(self, job: str) -> dict | None:
        return self.jobs.get_job(job)

    def update_job(self, job: str, **attrs: Any) -> dict:
        return self.jobs.update_job(job, **attrs)

    def add_to_job(self, job: str, **counters: int) -> dict:
        return self.jobs.add_to_job(job, **counters)

    def cancel_job(self, job: str, reason: str) -> bool:
        return self.jobs.cancel_job(job, reason)

    def cancelled_reason(self, job: str) -> str:
        return self.jobs.cancelled_reason(job)

    def index_job(self, bucket: str, key: str, job: str, attrs: dict) -> None:
        self.jobs.index_job(bucket, key, job, attrs)

    def jobs_for_key(self, bucket: str, key: str) -> list[dict]:
        return self.jobs.jobs_for_key(bucket, key)

    def claim_report_name(self, bucket: str, key: str, stamp: str, job: str) -> bool:
        return self.jobs.claim_report_name(bucket, key, stamp, job)

    def claim_finalize(self, job: str, lease_s: float = FINALIZE_LEASE_S, now: float | None = None) -> bool:
        return self.jobs.claim_finalize(job, lease_s, now)

    def release_finalize(self, job: str) -> None:
        self.jobs.release_finalize(job)

    # ---------------------------------------------------------------- rows
    def put_rows(self, job: str, rows: Iterable[dict]) -> int:
        return self.rows.put_rows(job, rows)

    def set_row_uuid(self, job: str, row: int, phonon_uuid: str) -> tuple[dict, bool]:
        return self.rows.set_row_uuid(job, row, phonon_uuid)

    def clear_row_uuid(self, job: str, row: int, phonon_uuid: str) -> None:
        self.rows.clear_row_uuid(job, row, phonon_uuid)

    def put_outcomes(self, job: str, chunk: int, rows: list[dict], at: int) -> None:
        self.rows.put_outcomes(job, chunk, rows, at)

    def find_outcome(self, job: str, row: int) -> dict | None:
        return self.rows.find_outcome(job, row)

    def iter_rows(self, job: str) -> Iterator[dict]:
        return self.rows.iter_rows(job)

    def iter_outcomes(self, job: str) -> Iterator[dict]:
        return self.rows.iter_outcomes(job)

    def any_without_outcome(self, job: str, rows: Iterable[int]) -> bool:
        return self.rows.any_without_outcome(job, rows)

    # ---------------------------------------------------------------- ledger
    def claim_chunk(self, job: str, chunk: int, lease_s: float, now: float | None = None) -> ChunkClaim:
        return self.ledger.claim_chunk(job, chunk, lease_s, now)

    def note_chunk(self, job: str, chunk: int, **attrs: Any) -> bool:
        return self.ledger.note_chunk(job, chunk, **attrs)

    def release_chunk(self, job: str, chunk: int) -> None:
        self.ledger.release_chunk(job, chunk)

    def settle_chunk(self, job: str, chunk: int, state: str, **attrs: Any) -> None:
        self.ledger.settle_chunk(job, chunk, state, **attrs)

    def settle_open_chunk(self, job: str, chunk: int, state: str, **attrs: Any) -> bool:
        return self.ledger.settle_open_chunk(job, chunk, state, **attrs)

    def count_settled(self, job: str, chunk: int, **counters: int) -> tuple[bool, dict]:
        return self.ledger.count_settled(job, chunk, **counters)

    # ---------------------------------------------------------------- dedupe
    def claim_dedupe(self, flow: str, claims: list[tuple[str, str]], window_s: float,
                     now: float | None = None) -> dict[str, str]:
        return self.dedupe.claim_dedupe(flow, claims, window_s, now)

    def release_dedupe(self, flow: str, claims: list[tuple[str, str]]) -> None:
        self.dedupe.release_dedupe(flow, claims)

    def flow_lock(self, name: str, lease_s: float = 30.0, wait_s: float | None = None) -> AbstractContextManager[None]:
        return self.dedupe.flow_lock(name, lease_s, wait_s)

    @property
    def lock_wait_s(self) -> float:
        return self.dedupe.lock_wait_s

    @lock_wait_s.setter
    def lock_wait_s(self, seconds: float) -> None:
        self.dedupe.lock_wait_s = seconds

    # ---------------------------------------------------------------- small shared items
    def get_item(self, pk: str) -> dict | None:
        """A limiter/breaker item (`limits.get`) or a dedupe claim (`dedupe.get_claim`); any
        other key is refused (ValueError): those items have repositories of their own."""
        if pk.startswith(DEDUPE):
            return self.dedupe.get_claim(pk[len(DEDUPE):])
        return self.limits.get(pk)

    def put_if(self, pk: str, attrs: dict, expect: dict | None) -> bool:
        """Optimistic write of a limiter/breaker item on its version (`limits.put_if_version`):
        `expect` is None (the item must not exist) or {"ver": n}."""
        if expect is not None and set(expect) != {"ver"}:
            raise ValueError(f"limiter and breaker items are written on their version only, not {sorted(expect)}")
        return self.limits.put_if_version(pk, attrs, None if expect is None else int(expect["ver"]))

    # ---------------------------------------------------------------- results
    def put_results(self, items: Iterable[dict]) -> int:
        return self.results.put_results(items)

    def upsert_result(self, uuid: str, attrs: dict) -> bool:
        return self.results.upsert_result(uuid, attrs)

    def get_result(self, uuid: str) -> dict | None:
        return self.results.get_result(uuid)
