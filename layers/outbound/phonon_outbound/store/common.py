"""What every repository shares: key layout, value encoding, bounds, retention.

State table (`pk`/`sk`, see docs/design.md "Storage"):
  JOB#<job>/META          the file job: object, flow, counts, checkpoint, chunk counters (jobs)
  JOB#<job>/ROW#<row>     one row's outcome when it is not in a chunk's outcome item: rows that
                          ingest rejected, rows filled in by an aborted run, and the phonon-uuid
                          a flow-end webhook brought (a "patch": no status of its own) (rows)
  JOB#<job>/OUT#<row>     a settled chunk's row outcomes in one item, keyed by its first row (rows)
  JOB#<job>/CHUNK#<n>     the chunk ledger: lease while a dispatcher sends it, DONE when settled (ledger)
  OBJ#<object identity>/- an S3 object version claimed by one job (duplicate notifications) (jobs)
  KEY#<bucket>/<key>/JOB#<job>       the jobs of one input key (cancelled when the object is deleted) (jobs)
  KEY#<bucket>/<key>/REPORT#<stamp>  a report name taken by one job of the key (no two share one) (jobs)
  DEDUPE#<hash>/-         a call claimed for the dedupe window (dedupe)
  DEDUPE-LOCK#<flow>/-    the lease that serialises one flow's claim phases (dedupe)
  LIMIT#<name>/-          the global rate limiter (`records`, `requests`) and an operator's caps
                          (`cap-job#<job>#<N>`, `cap-flow#<flow>#<N>`; expire a day after use) (limits)
  BREAKER#<flow>/-        the per-flow circuit breaker (limits)
  FLOWCTL#<flow>/-        a flow's pause (`paused_reason`) and rate cap (`rate_cap`) (jobs)
Results table: one item per call Phonon accepted, keyed by `phonon-uuid` (results).

Retention: every item that holds personal data (job META, ROW#, OUT#, KEY#, object claims)
carries `expires_at` (epoch seconds) = now + the retention period (`Retention.expiry`); both
tables have DynamoDB TTL on it. TTL deletes late (up to days), so readers that matter treat an
expired item as absent (`Retention.live`) — the in-memory fakes never delete on their own
either, so the contract tests hold both to that.

Bounds: DynamoDB refuses an item over 400 KB (and moto applies part of such an update before
refusing it, which hides the problem locally). Job items hold counters, keys and a few
strings; the free-text ones (`notes`, `error`, `cancelled_reason`) are capped here
(`bound_job_attrs`), whoever writes them.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

ROW_PAD = 10
CHUNK_PAD = 8
DEFAULT_RETENTION_S = 90 * 86400
# Longer than any function that writes reports may run (ingest: 900 s), so a live writer is
# never taken over.
FINALIZE_LEASE_S = 960
ACTIVE_SHARD = "A"  # the `active-jobs` index's hash key while a job is not completed
ACTIVE_INDEX = "active-jobs"
AWAITING = "AWAITING#"  # pk of the index of jobs whose report waits for outcomes (sk JOB#<job>)
MAX_NOTES = 20  # notes kept on a job item (and so in its summary); more are counted, not stored
MAX_NOTE_CHARS = 500
MAX_TEXT_CHARS = 2000  # error / cancelled_reason
SETTLED_SET_COMPACT = 500  # a job's settled-chunk set is compacted past this many numbers
DEDUPE_LOCK_WAIT_S = 10.0  # how long a claim phase waits for its flow's lock (see DynamoDedupe)

Clock = Callable[[], float]


def clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def bound_notes(notes: Iterable[str]) -> list[str]:
    """At most MAX_NOTES distinct notes of at most MAX_NOTE_CHARS each (linear: a set of the
    ones seen); the rest are summed up in one last note."""
    kept: list[str] = []
    seen: set[str] = set()
    dropped = 0
    for note in notes:
        note = clip(note, MAX_NOTE_CHARS)
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
            out[name] = clip(out[name], MAX_TEXT_CHARS)
    return out


# ---------------------------------------------------------------- keys
def job_pk(job: str) -> str:
    return f"JOB#{job}"


def row_sk(row: int) -> str:
    return f"ROW#{row:0{ROW_PAD}d}"


def chunk_sk(chunk: int) -> str:
    return f"CHUNK#{chunk:0{CHUNK_PAD}d}"


def outcome_sk(first_row: int) -> str:
    return f"OUT#{first_row:0{ROW_PAD}d}"


def key_pk(bucket: str, key: str) -> str:
    return f"KEY#{bucket}/{key}"


def flow_control_pk(flow: str) -> str:
    """A flow's control item (its pause, its rate cap): `FLOWCTL#<flow>`, sort key `-`."""
    return f"FLOWCTL#{flow}"


@dataclass(frozen=True)
class Control:
    """What dispatch must obey for one job's chunks (`store.jobs.control`): its cancel and pause
    reasons ("" = none; a flow's pause reads "flow <id> paused: <reason>") and the caps an
    operator set on the job and on its flow, in calls per minute (None = no cap; control.py,
    action `limit`). The flow's cap is read only when the job is neither cancelled nor paused."""

    cancelled: str = ""
    paused: str = ""
    job_cap: int | None = None
    flow_cap: int | None = None

    @property
    def cap(self) -> int | None:
        """The cap that binds: the smaller of the job's and the flow's (None: neither is set)."""
        caps = [c for c in (self.job_cap, self.flow_cap) if c is not None]
        return min(caps) if caps else None


class FlowControl(NamedTuple):
    """A flow's control item (`FLOWCTL#<flow>`) in one read: its pause reason ("" = not
    paused; the operator's text, without the "flow <id> paused: " of `Control.paused`) and its
    rate cap (None = no cap)."""

    paused: str = ""
    cap: int | None = None


def read_cap(value: Any) -> int | None:
    """A stored `rate_cap` as calls per minute: None when absent or not a positive whole number."""
    try:
        cap = int(value)
    except (TypeError, ValueError):
        return None
    return cap if cap >= 1 else None


def flow_pause_text(flow: str, reason: str) -> str:
    """A flow's pause as a job's chunks see it ("" when the flow is not paused)."""
    return f"flow {flow} paused: {reason}" if reason else ""


OBJECT = "OBJ#"  # + the object identity
DEDUPE = "DEDUPE#"  # + the call's hash
DEDUPE_LOCK = "DEDUPE-LOCK#"  # + the flow
LIMIT = "LIMIT#"  # + the limiter's name
BREAKER = "BREAKER#"  # + the flow
LIMIT_PREFIXES = (LIMIT, BREAKER)


def paged_query(table: Any, **kwargs: Any) -> Iterator[dict]:
    """Every item a Query returns, page after page (raw DynamoDB values)."""
    while True:
        page = table.query(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# ---------------------------------------------------------------- encoding
# A chunk's row outcomes travel as gzip(JSON {"f": fields, "r": [[values], ...]}) in one item.
OUTCOME_FIELDS = ("row", "status", "cid", "request_id", "phonon_uuid", "reason", "numbers")
# DynamoDB's item limit is 400 KB; a 500-call chunk's blob is ~3 KB (202 answer shape) to ~26 KB (200 shape). A bigger one (huge
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


def plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; hand the rest of the code plain ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def dec(value: float) -> Decimal:
    return Decimal(str(round(value, 6)))


def stored(value: Any) -> Any:
    """What a value reads back as after a DynamoDB round trip through this package (floats
    rounded to 6 places and integral ones as int, sets and lists copied, a str enum member
    as its plain string): the fakes store values this way so they hand out exactly what the
    DynamoDB classes do."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return plain(dec(value))
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, dict):
        return {k: stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v) for v in value]
    if isinstance(value, set):
        return {stored(v) for v in value}
    return value


def set_update(attrs: dict[str, Any]) -> dict[str, Any]:
    """`SET #a = :a, …` with its names and values (floats as Decimal), for update_item."""
    return {
        "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in attrs),
        "ExpressionAttributeNames": {f"#{k}": k for k in attrs},
        "ExpressionAttributeValues": {f":{k}": (dec(v) if isinstance(v, float) else v) for k, v in attrs.items()},
    }


def conditional_failed(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def conditional(write: Callable[..., Any], **request: Any) -> bool:
    """Make a conditional write (`table.put_item`, `update_item`, …): True when it went
    through, False when its condition refused it; any other error is raised."""
    try:
        write(**request)
        return True
    except ClientError as err:
        if conditional_failed(err):
            return False
        raise


# ---------------------------------------------------------------- retention
class Retention:
    """The retention period and the clock every repository of one store shares."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S, clock: Clock = time.time):
        self.retention_s = float(retention_s)
        self.clock = clock

    def now(self) -> float:
        return self.clock()

    def expiry(self, now: float | None = None) -> int:
        """`expires_at` for an item written now: DynamoDB TTL deletes it after the retention period."""
        return int((self.clock() if now is None else now) + self.retention_s)

    def live(self, item: dict | None, now: float | None = None) -> bool:
        return live(item, self.clock() if now is None else now)


def live(item: dict | None, now: float | None = None) -> bool:
    """False for an item whose `expires_at` has passed (TTL has not deleted it yet)."""
    if not item:
        return False
    exp = item.get("expires_at")
    return exp is None or float(exp) >= (time.time() if now is None else now)


# ---------------------------------------------------------------- shared values
class RowUuidConflict(Exception):
    """The row already carries another phonon-uuid (`RowsRepository.set_row_uuid`)."""

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


def batch_get(resource: Any, table: Any, keys: list[dict], projection: str | None = None,
              names: dict[str, str] | None = None) -> Iterator[dict]:
    """The items of `table` (a boto3 Table of the DynamoDB `resource`) at these keys that exist (BatchGetItem: 100 keys a
    request, unprocessed keys asked again), consistent reads, as plain values."""
    extra: dict[str, Any] = {}
    if projection:
        extra = {"ProjectionExpression": projection, "ExpressionAttributeNames": names or {}}
    for i in range(0, len(keys), 100):
        request: dict | None = {table.name: {"Keys": keys[i:i + 100], "ConsistentRead": True, **extra}}
        while request:
            out = resource.batch_get_item(RequestItems=request)
            for item in out.get("Responses", {}).get(table.name, []):
                yield plain(item)
            request = out.get("UnprocessedKeys") or None
