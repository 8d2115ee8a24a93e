"""What dispatch decides, as values (docs/design.md, "Every row ends with a status (dispatch)").

- `RowOutcome`: one row's outcome, as written to the state table (`to_item`) and read back
  (`from_item`).
- `ChunkOutcome`: what happened to one chunk in one invocation: its `Fate` and its rows; the
  counts are derived from the rows, never kept by hand.
- `Decision`: what to do with the SQS message that carried the chunk — `Done`, `RetryAfter`,
  `HandBack` or `Poison`. `DispatchService.handle` returns one; the dispatch handler turns it
  into SQS calls in one place (`sqs_actions.SqsActions`).

Frozen dataclasses, not pydantic models: these are built by our own code from values it has
checked already (nothing here parses untrusted input), and they are built once per row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .status import Status


class Fate(StrEnum):
    """How a chunk ended in one invocation."""

    SETTLED = "settled"  # every row has its outcome, the chunk is settled and counted
    WAITING = "waiting"  # nothing settled: the message waits (handed back, or retried)
    DUPLICATE_DELIVERY = "duplicate-delivery"  # settled by an earlier delivery: that outcome stands
    # The last receive failed (an answer that stayed transient, an error on the last receive):
    # the rows it had not decided are FAILED and recorded, the chunk is settled FAILED, and the
    # message goes to the DLQ for an operator's redrive (`RetryAfter(0, …)` on the last receive).
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class RowOutcome:
    """One row's outcome. `numbers` are the call's contact numbers (for the results item; never
    logged)."""

    row: int
    status: Status
    cid: str = ""
    request_id: str = ""
    phonon_uuid: str = ""
    reason: str = ""
    numbers: tuple[str, ...] = ()

    @staticmethod
    def of_call(row: int, call: dict, status: Status, request_id: str = "", phonon_uuid: str = "",
                reason: str = "") -> RowOutcome:
        """The outcome of a row whose call (as in the chunk message) is `call` (may be {})."""
        numbers = call.get("contact-numbers", [])
        return RowOutcome(row, status, str(call.get("client-identifier", "")), request_id, phonon_uuid, reason,
                          tuple(str(n) for n in numbers) if isinstance(numbers, list) else ())

    def to_item(self) -> dict[str, Any]:
        """The dict `store.rows.put_outcomes` takes (its OUTCOME_FIELDS)."""
        return {"row": self.row, "status": self.status.value, "cid": self.cid, "request_id": self.request_id,
                "phonon_uuid": self.phonon_uuid, "reason": self.reason, "numbers": list(self.numbers)}

    @staticmethod
    def from_item(item: dict[str, Any]) -> RowOutcome:
        """From a stored outcome (empty fields may be left out); ValueError on an unknown status."""
        numbers = item.get("numbers") or []
        return RowOutcome(int(item["row"]), Status(item.get("status", "")), str(item.get("cid", "")),
                          str(item.get("request_id", "")), str(item.get("phonon_uuid", "")),
                          str(item.get("reason", "")), tuple(str(n) for n in numbers))


@dataclass
class ChunkOutcome:
    """What happened to one chunk in this invocation."""

    fate: Fate
    rows: dict[int, RowOutcome] = field(default_factory=dict)
    requests: int = 0  # requests Phonon answered (any HTTP response)
    attempts: int = 0  # requests started, answered or not
    reason: str = ""
    claims: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> dedupe (hash, owner)
    claimed: bool = False  # this invocation holds the chunk's lease

    def add(self, outcome: RowOutcome) -> None:
        """Record a row's outcome (once: a row already decided keeps its outcome)."""
        self.rows.setdefault(outcome.row, outcome)

    def count(self, status: Status) -> int:
        """How many of its rows have `status`."""
        return sum(1 for o in self.rows.values() if o.status is status)

    def counters(self) -> dict[str, int]:
        """accepted / failed / duplicate / cancelled, as the chunk ledger and the job count them."""
        counted = Counter(o.status for o in self.rows.values())
        return {s.name.lower(): counted[s] for s in (Status.ACCEPTED, Status.FAILED, Status.DUPLICATE, Status.CANCELLED)}


# ---------------------------------------------------------------- decisions about the message
@dataclass(frozen=True)
class Done:
    """The chunk is finished with (settled now, or earlier): delete the message."""

    outcome: ChunkOutcome


@dataclass(frozen=True)
class RetryAfter:
    """Fail this receive and let the message come back through its visibility timeout, after
    `seconds` (None: the queue's own visibility timeout, for an unexpected error). It counts a
    receive: after the queue's maxReceiveCount the message goes to the DLQ, which is how an
    exhausted chunk (settled FAILED on its last receive) gets there."""

    seconds: float | None
    reason: str


@dataclass(frozen=True)
class HandBack:
    """Wait without spending a receive: queue a copy of the message with a delay of `seconds`
    (SQS caps a delay at 900 s; a longer wait comes back and is handed back again) and delete
    this one."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class Poison:
    """A message that names nothing we could settle: fail it, visible again at once, so it
    reaches the DLQ after maxReceiveCount receives."""

    reason: str


Decision = Done | RetryAfter | HandBack | Poison
