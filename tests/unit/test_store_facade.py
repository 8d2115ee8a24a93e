"""`Store` is the six repositories under one name (store/facade.py), with no methods of its
own beyond the retention they share: every repository implementation (DynamoDB and
in-memory) must offer its Protocol's methods with the same signatures, and the facade must
not grow back the forwarding methods the callers moved off (`store.x(...)` is
`store.<repo>.x(...)` now)."""

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
REPOSITORY_NAMES = ("jobs", "rows", "ledger", "dedupe", "limits", "results")
# What the facade itself answers: the retention the repositories share.
FACADE_API = {"expiry", "live", "retention_s"}


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


def test_the_facade_answers_only_the_shared_retention_and_forwards_nothing():
    public = {n for n in dir(Store) if not n.startswith("_")}
    assert public == FACADE_API
    for protocol, _, _ in REPOSITORIES:
        assert not set(methods(protocol)) & public, protocol.__name__


def test_the_memory_store_is_the_same_facade():
    store = memory.MemoryStore()
    assert isinstance(store, Store)
    assert {type(getattr(store, r)).__name__ for r in REPOSITORY_NAMES} == {
        "MemoryJobs", "MemoryRows", "MemoryLedger", "MemoryDedupe", "MemoryLimits", "MemoryResults"}
