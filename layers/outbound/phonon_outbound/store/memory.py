"""In-memory fakes of the six repositories, and `MemoryStore`: the `Store` facade over them.

For fast unit tests of the services (no moto, no DynamoDB). They keep the DynamoDB classes'
semantics, and tests/integration/test_store_contracts.py runs the same tests against both so
they cannot drift: conditional writes refuse the same way; leases are judged against the
`now` passed (or the store's clock); items past `expires_at` (and dedupe claims past their
window) are ignored by the readers exactly as the DynamoDB code ignores items TTL has not yet
deleted — nothing here deletes on its own either; values read back as they would from
DynamoDB (floats rounded, integral numbers as int, copies, never the stored object).

The items live in one `MemoryTables` (the state table as {(pk, sk): item}, the results table
as {uuid: item}) guarded by one lock; two `MemoryStore`s built on the same tables behave like
two processes sharing one DynamoDB (each has its own local flow locks, as each Lambda
instance has).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .common import (
    ACTIVE_SHARD,
    AWAITING,
    DEDUPE,
    DEDUPE_LOCK,
    DEDUPE_LOCK_WAIT_S,
    DEFAULT_RETENTION_S,
    FINALIZE_LEASE_S,
    MAX_OUTCOME_BLOB,
    MAX_TEXT_CHARS,
    OBJECT,
    SETTLED_SET_COMPACT,
    ChunkClaim,
    Clock,
    Control,
    FlowControl,
    Retention,
    RowUuidConflict,
    bound_job_attrs,
    chunk_sk,
    clip,
    encode_outcomes,
    flow_control_pk,
    flow_pause_text,
    job_pk,
    key_pk,
    outcome_sk,
    read_cap,
    row_sk,
    stored,
)
from .dedupe import LocalLocks, decide, new_claim
from .facade import Store
from .jobs import upload_order
from .ledger import ChunkState, compacted, refused_claim
from .limits import check_key
from .results import binding_allows, present
from .rows import (
    FIRST_ONLY,
    OUTCOME_ATTRS,
    first_without_outcome,
    merge_outcomes,
    one_outcome,
    outcome_fields,
    row_item,
)

Key = tuple[str, str]


class MemoryTables:
    """The state and results tables of one fake DynamoDB."""

    def __init__(self) -> None:
        self.state: dict[Key, dict] = {}
        self.results: dict[str, dict] = {}
        self.lock = threading.RLock()

    def get(self, pk: str, sk: str) -> dict | None:
        item = self.state.get((pk, sk))
        return copy.deepcopy(item) if item is not None else None

    def put(self, item: dict) -> None:
        self.state[(item["pk"], item["sk"])] = stored(item)

    def update(self, pk: str, sk: str, attrs: dict) -> dict:
        """SET these attributes (creating the item, as UpdateItem does); the new item."""
        item = self.state.setdefault((pk, sk), {"pk": pk, "sk": sk})
        item.update(stored(attrs))
        return copy.deepcopy(item)

    def query(self, pk: str, prefix: str) -> list[dict]:
        """The items of `pk` whose sort key starts with `prefix`, in sort-key order (copies)."""
        return [copy.deepcopy(item) for (p, s), item in sorted(self.state.items()) if p == pk and s.startswith(prefix)]


class _Fake:
    def __init__(self, tables: MemoryTables, retention: Retention):
        self.t = tables
        self.retention = retention


class MemoryJobs(_Fake):
    def claim_object(self, identity: str, job: str, lease_s: float, now: float | None = None) -> str:
        now = self.retention.now() if now is None else now
        with self.t.lock:
            item = self.t.state.get((OBJECT + identity, "-"))
            if item is None:
                self.t.put({"pk": OBJECT + identity, "sk": "-", "job": job, "lease_until": now + lease_s,
                            "done": False, "expires_at": self.retention.expiry(now)})
                return "new"
            if item.get("done") is False and float(item.get("lease_until", 0)) < now:
                self.t.update(OBJECT + identity, "-", {"lease_until": now + lease_s})
                return "resume"
            return "duplicate"

    def renew_object(self, identity: str, lease_s: float, done: bool = False) -> None:
        with self.t.lock:
            self.t.update(OBJECT + identity, "-", {"lease_until": self.retention.now() + lease_s, "done": done})

    def _stamp(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {**bound_job_attrs(attrs), "updated_at": int(self.retention.now())}

    def put_job(self, job: str, attrs: dict) -> None:
        with self.t.lock:
            self.t.put({"pk": job_pk(job), "sk": "META", "updated_at": int(self.retention.now()),
                        **bound_job_attrs(attrs), "expires_at": self.retention.expiry()})

    def create_job(self, job: str, attrs: dict) -> bool:
        with self.t.lock:
            if (job_pk(job), "META") in self.t.state:
                return False
            self.t.put({"pk": job_pk(job), "sk": "META", **self._stamp(attrs), "expires_at": self.retention.expiry(),
                        "active_shard": ACTIVE_SHARD})
            return True

    def get_job(self, job: str) -> dict | None:
        with self.t.lock:
            item = self.t.get(job_pk(job), "META")
        return item if item and self.retention.live(item) else None

    def update_job(self, job: str, **attrs: Any) -> dict:
        with self.t.lock:
            item = self.t.update(job_pk(job), "META", self._stamp(attrs))
            if attrs.get("completed"):
                self.t.state[(job_pk(job), "META")].pop("active_shard", None)
                item.pop("active_shard", None)
            return item

    def add_to_job(self, job: str, **counters: int) -> dict:
        with self.t.lock:
            old = self.t.state.get((job_pk(job), "META")) or {}
            added = {k: old.get(k, 0) + v for k, v in counters.items()}
            return self.t.update(job_pk(job), "META", {"updated_at": int(self.retention.now()), **added})

    def cancel_job(self, job: str, reason: str) -> bool:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META"))
            if item is None or "cancelled_reason" in item or item.get("completed", False) is not False:
                return False
            self.t.update(job_pk(job), "META", {"cancelled_reason": clip(reason, MAX_TEXT_CHARS),
                                                "updated_at": int(self.retention.now())})
            return True

    def pause_job(self, job: str, reason: str) -> bool:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META"))
            if item is None or item.get("paused_reason") or item.get("completed", False) is not False:
                return False
            now = int(self.retention.now())
            self.t.update(job_pk(job), "META", {"paused_reason": clip(reason or "paused", MAX_TEXT_CHARS),
                                                "paused_at": now, "updated_at": now})
            return True

    def _unpause(self, pk: str, sk: str, **stamp: int) -> bool:
        with self.t.lock:
            item = self.t.state.get((pk, sk))
            if item is None or not item.get("paused_reason"):
                return False
            item.pop("paused_reason", None)
            item.pop("paused_at", None)
            item.update(stamp)
            return True

    def resume_job(self, job: str) -> bool:
        return self._unpause(job_pk(job), "META", updated_at=int(self.retention.now()))

    def pause_flow(self, flow: str, reason: str) -> bool:
        with self.t.lock:
            item = self.t.state.get((flow_control_pk(flow), "-"))
            if item is not None and item.get("paused_reason"):
                return False
            self.t.update(flow_control_pk(flow), "-", {"paused_reason": clip(reason or "paused", MAX_TEXT_CHARS),
                                                       "paused_at": int(self.retention.now())})
            return True

    def resume_flow(self, flow: str) -> bool:
        return self._unpause(flow_control_pk(flow), "-")

    def flow_paused(self, flow: str) -> str:
        with self.t.lock:
            item = (self.t.state.get((flow_control_pk(flow), "-")) or {}) if flow else {}
            return str(item.get("paused_reason") or "")

    def set_job_cap(self, job: str, per_minute: int | None) -> bool:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META"))
            if item is None or item.get("rate_cap") == per_minute:
                return False
            if per_minute is None:
                item.pop("rate_cap", None)
                item["updated_at"] = int(self.retention.now())
            else:
                self.t.update(job_pk(job), "META", {"rate_cap": int(per_minute),
                                                    "updated_at": int(self.retention.now())})
            return True

    def set_flow_cap(self, flow: str, per_minute: int | None) -> bool:
        with self.t.lock:
            item = self.t.state.get((flow_control_pk(flow), "-")) or {}
            if item.get("rate_cap") == per_minute:
                return False
            if per_minute is None:
                self.t.state[(flow_control_pk(flow), "-")].pop("rate_cap", None)
            else:
                self.t.update(flow_control_pk(flow), "-", {"rate_cap": int(per_minute)})
            return True

    def flow_control(self, flow: str) -> FlowControl:
        with self.t.lock:
            item = (self.t.state.get((flow_control_pk(flow), "-")) or {}) if flow else {}
            return FlowControl(str(item.get("paused_reason") or ""), read_cap(item.get("rate_cap")))

    def control(self, job: str, flow: str = "") -> Control:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META")) or {}
            cancelled, paused = str(item.get("cancelled_reason") or ""), str(item.get("paused_reason") or "")
            job_cap = read_cap(item.get("rate_cap"))
            if cancelled or paused:
                return Control(cancelled, paused, job_cap)
        flow_paused, flow_cap = self.flow_control(flow)
        return Control("", flow_pause_text(flow, flow_paused), job_cap, flow_cap)

    def index_job(self, bucket: str, key: str, job: str, attrs: dict) -> None:
        with self.t.lock:
            self.t.put({"pk": key_pk(bucket, key), "sk": f"JOB#{job}", "job": job, **attrs,
                        "expires_at": self.retention.expiry()})

    def jobs_for_key(self, bucket: str, key: str) -> list[dict]:
        with self.t.lock:
            items = [i for i in self.t.query(key_pk(bucket, key), "JOB#") if self.retention.live(i)]
            return upload_order(items, lambda job: str((self.t.state.get((job_pk(job), "META")) or {})
                                                       .get("report_csv_key") or ""))

    def claim_report_name(self, bucket: str, key: str, stamp: str, job: str) -> bool:
        with self.t.lock:
            item = self.t.state.get((key_pk(bucket, key), f"REPORT#{stamp}"))
            if item is not None and item.get("job") != job:
                return False
            self.t.put({"pk": key_pk(bucket, key), "sk": f"REPORT#{stamp}", "job": job,
                        "expires_at": self.retention.expiry()})
            return True

    def claim_finalize(self, job: str, lease_s: float = FINALIZE_LEASE_S, now: float | None = None,
                       rewrite: bool = False) -> bool:
        now = self.retention.now() if now is None else now
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META"))
            if item is None or ("finalizing" in item and not item["finalizing"] < int(now)) \
                    or (not rewrite and item.get("completed", False) is not False):
                return False
            self.t.update(job_pk(job), "META", {"finalizing": int(now + lease_s), "updated_at": int(now)})
            return True

    def release_finalize(self, job: str) -> None:
        with self.t.lock:
            item = self.t.state.setdefault((job_pk(job), "META"), {"pk": job_pk(job), "sk": "META"})
            item.pop("finalizing", None)

    def stale_jobs(self, updated_before: int) -> Iterator[tuple[str, int]]:
        with self.t.lock:
            found = [(int(i["updated_at"]), pk[len("JOB#"):]) for (pk, sk), i in self.t.state.items()
                     if sk == "META" and i.get("active_shard") == ACTIVE_SHARD
                     and isinstance(i.get("updated_at"), int) and i["updated_at"] < updated_before]
        return iter([(job, at) for at, job in sorted(found)])

    # ---------------------------------------------------------------- the report function's bookkeeping
    def awaiting_outcomes(self) -> Iterator[str]:
        with self.t.lock:
            items = self.t.query(AWAITING, "JOB#")
        return iter([str(i["job"]) for i in items])

    def note_awaiting(self, job: str, awaiting: bool) -> None:
        with self.t.lock:
            if awaiting:
                self.t.put({"pk": AWAITING, "sk": f"JOB#{job}", "job": job, "expires_at": self.retention.expiry()})
            else:
                self.t.state.pop((AWAITING, f"JOB#{job}"), None)

    def claim_report_slot(self, job: str, previous: int, at: int) -> bool:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), "META"))
            if item is None or item.get("completed") is not True or int(item.get("report_next_at", 0)) != previous:
                return False
            item["report_next_at"] = int(at)
            return True


class MemoryRows(_Fake):
    def __init__(self, tables: MemoryTables, retention: Retention):
        super().__init__(tables, retention)
        self.max_blob = MAX_OUTCOME_BLOB

    def put_rows(self, job: str, rows: Iterable[dict]) -> int:
        expires = self.retention.expiry()
        items = [row_item(job, row, expires) for row in rows]
        with self.t.lock:
            for item in items:
                self.t.put(item)
        return len(items)

    def set_row_uuid(self, job: str, row: int, phonon_uuid: str) -> tuple[dict, bool]:
        with self.t.lock:
            old = self.t.get(job_pk(job), row_sk(row)) or {}
            if old.get("phonon_uuid", phonon_uuid) != phonon_uuid:
                raise RowUuidConflict(job, row)
            self.t.update(job_pk(job), row_sk(row), {"phonon_uuid": phonon_uuid, "row": row,
                                                     "expires_at": old.get("expires_at", self.retention.expiry())})
        return {**old, "phonon_uuid": phonon_uuid, "row": row}, old.get("phonon_uuid") != phonon_uuid

    def record_outcome(self, job: str, row: int, phonon_uuid: str, fields: dict) -> tuple[dict, bool]:
        attrs = outcome_fields(fields)
        with self.t.lock:
            old = self.t.get(job_pk(job), row_sk(row)) or {}
            if old.get("phonon_uuid", phonon_uuid) != phonon_uuid:
                raise RowUuidConflict(job, row)
            attrs = {k: v for k, v in attrs.items() if not (k in FIRST_ONLY and k in old)}
            self.t.update(job_pk(job), row_sk(row), {"phonon_uuid": phonon_uuid, "row": row, **attrs,
                                                     "expires_at": old.get("expires_at", self.retention.expiry())})
        return {**old, "phonon_uuid": phonon_uuid, "row": row}, "outcome_at" not in old

    def clear_row_uuid(self, job: str, row: int, phonon_uuid: str) -> None:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), row_sk(row)))
            if item is not None and item.get("phonon_uuid") == phonon_uuid:
                del item["phonon_uuid"]
                for k in OUTCOME_ATTRS:
                    item.pop(k, None)

    def put_outcomes(self, job: str, chunk: int, rows: list[dict], at: int) -> None:
        if not rows:
            return
        blob = encode_outcomes(rows)
        if len(blob) > self.max_blob:
            with self.t.lock:
                patched = {int(r["row"]): (self.t.state.get((job_pk(job), row_sk(int(r["row"])))) or {})
                           .get("phonon_uuid", "") for r in rows}
            self.put_rows(job, ({**r, "chunk": chunk, "at": at,
                                 "phonon_uuid": r.get("phonon_uuid") or patched.get(int(r["row"]), "")}
                                for r in rows))
            return
        first = min(int(r["row"]) for r in rows)
        with self.t.lock:
            self.t.put({"pk": job_pk(job), "sk": outcome_sk(first), "chunk": chunk, "n": len(rows),
                        "last_row": max(int(r["row"]) for r in rows), "at": at, "outcomes": blob,
                        "expires_at": self.retention.expiry()})

    def find_outcome(self, job: str, row: int) -> dict | None:
        with self.t.lock:
            below = [i for i in self.t.query(job_pk(job), "OUT#") if i["sk"] <= outcome_sk(row)]
        if not below or int(below[-1].get("last_row", -1)) < row or not self.retention.live(below[-1]):
            return None
        return below[-1]

    def get_outcome(self, job: str, row: int) -> dict | None:
        with self.t.lock:
            item = self.t.get(job_pk(job), row_sk(row))
        row_item = item if item is not None and self.retention.live(item) else None
        return one_outcome(row, self.find_outcome(job, row), row_item)

    def _live(self, job: str, prefix: str) -> Iterator[dict]:
        now = self.retention.now()
        with self.t.lock:
            items = self.t.query(job_pk(job), prefix)
        return (i for i in items if self.retention.live(i, now))

    def iter_rows(self, job: str) -> Iterator[dict]:
        return self._live(job, "ROW#")

    def iter_outcomes(self, job: str) -> Iterator[dict]:
        return merge_outcomes(self._live(job, "OUT#"), self.iter_rows(job))

    def iter_chunk_items(self, job: str) -> Iterator[dict]:
        return self._live(job, "OUT#")

    def any_without_outcome(self, job: str, rows: Iterable[int]) -> bool:
        def row_status(row: int) -> Any:
            return (self.t.get(job_pk(job), row_sk(row)) or {}).get("status")

        return first_without_outcome(rows, lambda row: self.find_outcome(job, row), row_status)


class MemoryLedger(_Fake):
    def __init__(self, tables: MemoryTables, retention: Retention, jobs: MemoryJobs):
        super().__init__(tables, retention)
        self.jobs = jobs
        self.compact_at = SETTLED_SET_COMPACT

    def claim_chunk(self, job: str, chunk: int, lease_s: float, now: float | None = None) -> ChunkClaim:
        now = self.retention.now() if now is None else now
        with self.t.lock:
            item = self.t.get(job_pk(job), chunk_sk(chunk))
            if item is not None and (item.get("state") == ChunkState.DONE or (
                    item.get("state") == ChunkState.IN_PROGRESS and not float(item.get("lease_until", 0)) < now)):
                return refused_claim(item, now)
            attempts = int((item or {}).get("attempts", 0)) + 1
            new = self.t.update(job_pk(job), chunk_sk(chunk), {
                "state": ChunkState.IN_PROGRESS, "lease_until": now + lease_s, "expires_at": self.retention.expiry(now),
                "attempts": attempts})
            return ChunkClaim("claimed", attempts=attempts, item=new)

    def get_chunk(self, job: str, chunk: int) -> dict | None:
        with self.t.lock:
            return self.t.get(job_pk(job), chunk_sk(chunk))

    def note_chunk(self, job: str, chunk: int, **attrs: Any) -> bool:
        with self.t.lock:
            item = self.t.state.get((job_pk(job), chunk_sk(chunk)))
            if item is None or item.get("state") != ChunkState.IN_PROGRESS:
                return False
            self.t.update(job_pk(job), chunk_sk(chunk), attrs)
            return True

    def release_chunk(self, job: str, chunk: int) -> None:
        self.note_chunk(job, chunk, state=ChunkState.RETRY, lease_until=0)

    def _settled(self, state: ChunkState, attrs: dict) -> dict:
        return {**attrs, "state": state, "settled": True, "lease_until": 0, "expires_at": self.retention.expiry()}

    def settle_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> None:
        with self.t.lock:
            self.t.update(job_pk(job), chunk_sk(chunk), self._settled(state, attrs))

    def settle_open_chunk(self, job: str, chunk: int, state: ChunkState, **attrs: Any) -> bool:
        with self.t.lock:
            if (self.t.state.get((job_pk(job), chunk_sk(chunk))) or {}).get("state") == ChunkState.DONE:
                return False
            self.t.update(job_pk(job), chunk_sk(chunk), self._settled(state, attrs))
            return True

    def count_settled(self, job: str, chunk: int, **counters: int) -> tuple[bool, dict]:
        with self.t.lock:
            old = self.t.state.get((job_pk(job), "META")) or {}
            if chunk in (old.get("settled_set") or set()) or int(old.get("settled_below", chunk)) > chunk:
                return False, self.jobs.get_job(job) or {}
            attrs = {"updated_at": int(self.retention.now()), "settled_set": {*(old.get("settled_set") or ()), chunk},
                     "chunks_settled": old.get("chunks_settled", 0) + 1,
                     **{k: old.get(k, 0) + v for k, v in counters.items()}}
            meta = self.t.update(job_pk(job), "META", attrs)
            if len(meta["settled_set"]) > self.compact_at:
                moved = compacted(meta)
                if moved is not None:
                    item = self.t.state[(job_pk(job), "META")]
                    item["settled_below"], item["settled_set"] = moved[0], item["settled_set"] - moved[1]
                    if not item["settled_set"]:  # DynamoDB drops a set its DELETE empties
                        del item["settled_set"]
            return True, meta


class MemoryDedupe(_Fake):
    def __init__(self, tables: MemoryTables, retention: Retention):
        super().__init__(tables, retention)
        self._local = LocalLocks()
        self.lock_wait_s = DEDUPE_LOCK_WAIT_S

    def claim_dedupe(self, flow: str, claims: list[tuple[str, str]], window_s: float,
                     now: float | None = None) -> dict[str, str]:
        now = self.retention.now() if now is None else now
        with self.flow_lock(DEDUPE_LOCK + flow), self.t.lock:
            existing = {h: item for h in dict(claims) if (item := self.t.get(DEDUPE + h, "-")) is not None}
            conflicts, new = decide(claims, existing, now)
            for h, owner in new:
                self.t.put(new_claim(h, owner, window_s, now, self.retention))
        return conflicts

    def release_dedupe(self, flow: str, claims: list[tuple[str, str]]) -> None:
        with self.flow_lock(DEDUPE_LOCK + flow), self.t.lock:
            for h, owner in claims:
                if (self.t.state.get((DEDUPE + h, "-")) or {}).get("owner") == owner:
                    del self.t.state[(DEDUPE + h, "-")]

    def get_claim(self, hash_: str) -> dict | None:
        with self.t.lock:
            return self.t.get(DEDUPE + hash_, "-")

    @contextmanager
    def flow_lock(self, name: str, lease_s: float = 30.0, wait_s: float | None = None) -> Iterator[None]:
        """The same two levels as DynamoDedupe.flow_lock: this instance's local lock, then the
        shared lease item (taken over once the holder's lease has run out)."""
        wait_s = self.lock_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        local = self._local.get(name)
        if not local.acquire(timeout=wait_s):
            raise TimeoutError(f"could not take {name} within {wait_s:.0f} s (this process)")
        token = uuid.uuid4().hex
        try:
            while True:
                with self.t.lock:
                    now = self.retention.now()
                    held = self.t.state.get((name, "-"))
                    if held is None or float(held["lease_until"]) < now:
                        self.t.put({"pk": name, "sk": "-", "token": token, "lease_until": now + lease_s})
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not take {name} within {wait_s:.0f} s")
                time.sleep(0.005)
            try:
                yield
            finally:
                with self.t.lock:
                    if (self.t.state.get((name, "-")) or {}).get("token") == token:
                        del self.t.state[(name, "-")]
        finally:
            local.release()


class MemoryLimits:
    def __init__(self, tables: MemoryTables):
        self.t = tables

    def get(self, key: str) -> dict | None:
        with self.t.lock:
            return self.t.get(check_key(key), "-")

    def put_if_version(self, key: str, attrs: dict, ver: int | None) -> bool:
        with self.t.lock:
            old = self.t.state.get((check_key(key), "-"))
            if (old is not None) if ver is None else (old is None or old.get("ver") != ver):
                return False
            self.t.put({"pk": key, "sk": "-", **attrs})
            return True


class MemoryResults(_Fake):
    def put_results(self, items: Iterable[dict]) -> int:
        n = 0
        with self.t.lock:
            for item in items:
                self.t.results[item["phonon-uuid"]] = stored(present(item))
                n += 1
        return n

    def upsert_result(self, uuid: str, attrs: dict) -> bool:
        attrs = {**present(attrs), "expires_at": self.retention.expiry()}
        with self.t.lock:
            old = self.t.results.get(uuid)
            if not binding_allows(old, attrs):
                return False
            item = self.t.results.setdefault(uuid, {"phonon-uuid": uuid})
            item.update(stored(attrs))
            if "job" in attrs and "row" in attrs:
                item.pop("unmatched", None)
            return True

    def get_result(self, uuid: str) -> dict | None:
        with self.t.lock:
            item = self.t.results.get(uuid)
            return copy.deepcopy(item) if item is not None else None

    def find_results(self, attr: str, value: str) -> Iterator[dict]:
        with self.t.lock:
            items = [copy.deepcopy(i) for i in self.t.results.values()
                     if str(i.get(attr, "")) == value and self.retention.live(i)]
        return iter(items)


class MemoryStore(Store):
    """`Store` over the in-memory fakes. `MemoryStore(tables=other.tables)` shares another
    store's data (a second process); `clock` is what "now" means when no `now` is passed."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S, clock: Clock = time.time,
                 tables: MemoryTables | None = None):
        self.tables = tables if tables is not None else MemoryTables()
        retention = Retention(retention_s, clock)
        jobs = MemoryJobs(self.tables, retention)
        self._compose(retention, jobs=jobs, rows=MemoryRows(self.tables, retention),
                      ledger=MemoryLedger(self.tables, retention, jobs), dedupe=MemoryDedupe(self.tables, retention),
                      limits=MemoryLimits(self.tables), results=MemoryResults(self.tables, retention))
