"""All DynamoDB access, as six small repositories behind narrow interfaces (docs/design.md,
"Storage"): `jobs`, `rows`, `ledger`, `dedupe`, `limits`, `results` — each a `typing.Protocol`,
a DynamoDB class and an in-memory fake (`store/memory.py`), held to the same behaviour by
tests/integration/test_store_contracts.py. The key layout lives in `store/common.py`.

`Store` holds them (`store.jobs`, `store.ledger`, ...) and the retention they share, and
forwards nothing (facade.py); `MemoryStore` (store/memory.py) is the same container over the
fakes.
"""

from .common import (
    ACTIVE_SHARD,
    CHUNK_PAD,
    DEFAULT_RETENTION_S,
    FINALIZE_LEASE_S,
    MAX_NOTE_CHARS,
    MAX_NOTES,
    MAX_OUTCOME_BLOB,
    MAX_TEXT_CHARS,
    OUTCOME_FIELDS,
    ROW_PAD,
    SETTLED_SET_COMPACT,
    ChunkClaim,
    Control,
    RowUuidConflict,
    bound_job_attrs,
    bound_notes,
    chunk_sk,
    decode_outcomes,
    encode_outcomes,
    job_pk,
    outcome_sk,
    row_sk,
)
from .dedupe import DedupeRepository
from .facade import Store
from .jobs import JobsRepository
from .ledger import ChunkState, LedgerRepository
from .limits import LimitsRepository
from .results import ResultsRepository
from .rows import RowsRepository

__all__ = [
    "ACTIVE_SHARD", "CHUNK_PAD", "DEFAULT_RETENTION_S", "FINALIZE_LEASE_S", "MAX_NOTES", "MAX_NOTE_CHARS",
    "MAX_OUTCOME_BLOB", "MAX_TEXT_CHARS", "OUTCOME_FIELDS", "ROW_PAD", "SETTLED_SET_COMPACT", "ChunkClaim", "Control",
    "ChunkState",
    "DedupeRepository", "JobsRepository", "LedgerRepository", "LimitsRepository", "ResultsRepository",
    "RowUuidConflict", "RowsRepository", "Store", "bound_job_attrs", "bound_notes", "chunk_sk", "decode_outcomes",
    "encode_outcomes", "job_pk", "outcome_sk", "row_sk",
]


def __getattr__(name: str) -> object:
    """`MemoryStore` on demand: the Lambdas never import the fakes."""
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
