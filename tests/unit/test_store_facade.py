"""`Store` is a forwarding facade over six repositories (store/facade.py): every method the
services call by its old name must have the repository's exact signature, and every
repository implementation (DynamoDB and in-memory) must offer its Protocol's methods with the
same signatures, so a caller can move from `store.x(...)` to `store.<repo>.x(...)` unchanged."""

from __future__ import annotations

import inspect

import pytest

from phonon_outbound.store import (
    DedupeRepository,
    JobsRepository,
    LedgerRepository,
    LimitsRepository,
    ResultsRepository,
    RowsRepository,
    Store,
    memory,
)
from phonon_outbound.store.dedupe import DynamoDedupe
from phonon_outbound.store.jobs import DynamoJobs
from phonon_outbound.store.ledger import DynamoLedger
from phonon_outbound.store.limits import DynamoLimits
from phonon_outbound.store.results import DynamoResults
from phonon_outbound.store.rows import DynamoRows

REPOSITORIES = [
    (JobsRepository, DynamoJobs, memory.MemoryJobs),
    (RowsRepository, DynamoRows, memory.MemoryRows),
    (LedgerRepository, DynamoLedger, memory.MemoryLedger),
    (DedupeRepository, DynamoDedupe, memory.MemoryDedupe),
    (LimitsRepository, DynamoLimits, memory.MemoryLimits),
    (ResultsRepository, DynamoResults, memory.MemoryResults),
]
# Methods new with the repositories (the facade keeps only the old names); the limits
# repository's narrow API replaces the facade's generic get_item/put_if.
NOT_ON_FACADE = {"get_chunk", "get_claim", "stale_jobs", "get", "put_if_version"}


def methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]


def signature(obj: object, name: str) -> str:
    """The parameters (names, kinds, defaults, annotations); return types are mypy's to check
    (a @contextmanager is declared `Iterator` and seen as a context manager)."""
    sig = inspect.signature(getattr(obj, name))
    return str(sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "self"],
                           return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize(("protocol", "dynamo", "fake"), REPOSITORIES, ids=lambda r: getattr(r, "__name__", ""))
def test_both_implementations_offer_the_protocol_with_its_signatures(protocol, dynamo, fake):
    assert methods(protocol)
    for name in methods(protocol):
        assert signature(dynamo, name) == signature(protocol, name), (dynamo.__name__, name)
        assert signature(fake, name) == signature(protocol, name), (fake.__name__, name)


@pytest.mark.parametrize(("protocol", "dynamo", "fake"), REPOSITORIES, ids=lambda r: getattr(r, "__name__", ""))
def test_the_facade_forwards_every_old_method_with_the_repositorys_signature(protocol, dynamo, fake):
    for name in methods(protocol):
        if name in NOT_ON_FACADE:
            continue
        assert signature(Store, name) == signature(protocol, name), name


def test_the_memory_store_is_the_same_facade():
    store = memory.MemoryStore()
    assert isinstance(store, Store)
    assert {type(getattr(store, r)).__name__ for r in ("jobs", "rows", "ledger", "dedupe", "limits", "results")} == {
        "MemoryJobs", "MemoryRows", "MemoryLedger", "MemoryDedupe", "MemoryLimits", "MemoryResults"}
