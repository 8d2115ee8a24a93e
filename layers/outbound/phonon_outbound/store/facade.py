"""`Store`: the six repositories under one name, and the retention they share.

It is a plain container: `store.jobs`, `store.rows`, `store.ledger`, `store.dedupe`,
`store.limits`, `store.results` (docs/design.md, "Storage: six repositories"), plus
`retention_s`, `expiry()` (the `expires_at` every repository writes) and `live()` (how every
reader judges an item TTL has not deleted yet). It forwards nothing: callers use the
repository they need (`store.ledger.claim_chunk(...)`); the services still take the one
`store` so they are built the same way on DynamoDB (`Store`) and on the fakes
(`MemoryStore`, store/memory.py).
"""

from __future__ import annotations

import time
from typing import Any

import boto3

from .common import DEFAULT_RETENTION_S, Clock, Retention, live
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
        self.state = ddb.Table(state_table)  # the state table itself, for tests that look at raw items
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
