"""Contract tests of the store's repositories, each method on its own, run twice: against the
in-memory fakes (`memory`, store/memory.py) and against DynamoDB (`moto`, tables built from
template.yaml), with explicit clocks. One suite for both, so the fakes the services' unit tests
use cannot drift from the DynamoDB code (docs/design.md, "Storage").

The dispatch-side promises are the ones "never call a customer twice" is built on
(docs/design.md, "Every row ends with a status"): a claim another owner holds within the
window is a conflict, a claim past its window is not (DynamoDB deletes TTL'd items late, so
the code must ignore them itself); a chunk has one holder at a time, a DONE chunk is never
handed out or reopened; a settled chunk is counted on its job once.
"""

from __future__ import annotations

import threading
import time

import pytest

from phonon_outbound.jobs import report_keys
from phonon_outbound.status import Status
from phonon_outbound.store import MAX_TEXT_CHARS, ChunkState, RowUuidConflict, decode_outcomes

T0 = 1_800_000_000.0
WINDOW = 3600.0
FLOW = "Flow0001"


@pytest.fixture
def store(any_store):
    return any_store


def h(i: int) -> str:
    return f"{i:064x}"


def claim_item(store, i: int) -> dict | None:
    return store.dedupe.get_claim(h(i))


def expired_writes(store):
    """From now on the store writes items whose `expires_at` has already passed (as if the
    retention period ended; DynamoDB's TTL has not deleted them yet)."""
    store.retention.retention_s = -10


# ================================================================ dedupe
def test_claim_dedupe_first_claim_wins_and_a_retry_of_the_same_owner_decides_the_same(store):
    claims = [(h(1), "J1.1"), (h(2), "J1.2")]
    assert store.dedupe.claim_dedupe(FLOW, claims, WINDOW, T0) == {}
    item = claim_item(store, 1)
    assert item["owner"] == "J1.1" and item["expires"] == T0 + WINDOW
    # TTL: an hour after the window (never past the data retention)
    assert item["expires_at"] == int(T0 + WINDOW) + 3600
    # the same chunk again (a retry): no conflict, and its window is not stretched
    assert store.dedupe.claim_dedupe(FLOW, claims, WINDOW, T0 + 100) == {}
    assert claim_item(store, 1)["expires"] == T0 + WINDOW


def test_claim_dedupe_reports_another_owners_claim_within_the_window_and_keeps_it(store):
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J1.2")], WINDOW, T0)
    conflicts = store.dedupe.claim_dedupe(FLOW, [(h(1), "J2.7"), (h(3), "J2.8")], WINDOW, T0 + WINDOW - 1)
    assert conflicts == {h(1): "J1.1"}
    assert claim_item(store, 1)["owner"] == "J1.1"  # the first owner keeps it
    assert claim_item(store, 3)["owner"] == "J2.8"  # the other call of the chunk is claimed


def test_claim_dedupe_at_the_windows_last_second_is_still_a_conflict(store):
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J2.1")], WINDOW, T0 + WINDOW) == {h(1): "J1.1"}


def test_claim_dedupe_ignores_a_claim_past_its_window_even_while_the_item_still_exists(store):
    # Given a claim whose window ended (its item not yet deleted by DynamoDB's TTL, which is late)
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert claim_item(store, 1) is not None
    # When the same call comes from another file just after the window
    conflicts = store.dedupe.claim_dedupe(FLOW, [(h(1), "J2.1")], WINDOW, T0 + WINDOW + 1)
    # Then it is no duplicate, and the claim is now the new owner's, for a new window
    assert conflicts == {}
    item = claim_item(store, 1)
    assert item["owner"] == "J2.1" and item["expires"] == T0 + 2 * WINDOW + 1
    # and a third file within that new window is the duplicate of the second
    assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J3.1")], WINDOW, T0 + WINDOW + 2) == {h(1): "J2.1"}


def test_claim_dedupe_renews_the_same_owners_expired_claim(store):
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0 + WINDOW + 5) == {}
    assert claim_item(store, 1)["expires"] == T0 + 2 * WINDOW + 5


def test_claim_dedupe_ttl_never_outlives_the_data_retention(store):
    store.retention.retention_s = 600  # shorter than the window plus an hour
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert claim_item(store, 1)["expires_at"] == int(T0) + 600


def test_claim_dedupe_decides_every_call_of_a_chunk_bigger_than_one_batch_read(store):
    mine = [(h(i), f"J1.{i}") for i in range(1, 251)]
    assert store.dedupe.claim_dedupe(FLOW, mine, WINDOW, T0) == {}
    theirs = [(h(i), f"J2.{i}") for i in range(1, 251)]
    conflicts = store.dedupe.claim_dedupe(FLOW, theirs, WINDOW, T0 + 1)
    assert conflicts == {h(i): f"J1.{i}" for i in range(1, 251)}


def test_release_dedupe_gives_back_only_the_owners_own_claims(store):
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J1.2")], WINDOW, T0)
    store.dedupe.release_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J9.9"), (h(5), "J1.5")])
    assert claim_item(store, 1) is None
    assert claim_item(store, 2)["owner"] == "J1.2"
    assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J2.1")], WINDOW, T0 + 1) == {}
    assert store.dedupe.claim_dedupe(FLOW, [(h(2), "J2.2")], WINDOW, T0 + 1) == {h(2): "J1.2"}


def test_claim_dedupe_waits_for_no_lock_of_another_flow_and_gives_up_on_a_live_one(store, peer_store):
    # Given another process holds flow OtherFlw's lock, and keeps it (a long lease)
    held = peer_store.dedupe.flow_lock("DEDUPE-LOCK#OtherFlw", lease_s=3600)
    held.__enter__()
    try:
        store.dedupe.lock_wait_s = 0.2
        assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0) == {}
        with pytest.raises(TimeoutError):  # the busy flow's own claims wait, then give up
            store.dedupe.claim_dedupe("OtherFlw", [(h(1), "J1.1")], WINDOW, T0)
    finally:
        held.__exit__(None, None, None)
    # Once it is given back, the flow's claims go through
    assert store.dedupe.claim_dedupe("OtherFlw", [(h(2), "J1.2")], WINDOW, T0) == {}


def test_a_dead_holders_flow_lock_is_taken_over_once_its_lease_lapses(store, peer_store):
    # Given a process that took the lock and died (never gave it back), with a short lease
    dead = peer_store.dedupe.flow_lock("DEDUPE-LOCK#" + FLOW, lease_s=0.3)
    dead.__enter__()  # (kept referenced: a collected generator would give the lock back)
    try:
        store.dedupe.lock_wait_s = 5
        # Then a claim phase of that flow runs once the lease has lapsed
        assert store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0) == {}
    finally:
        dead.__exit__(None, None, None)


def test_threads_of_one_process_take_the_flow_lock_one_at_a_time(store):
    inside: list[int] = []
    overlap: list[bool] = []

    def phase(i: int) -> None:
        with store.dedupe.flow_lock("DEDUPE-LOCK#" + FLOW):
            inside.append(i)
            overlap.append(len(inside) > 1)
            time.sleep(0.01)
            inside.remove(i)

    threads = [threading.Thread(target=phase, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [False] * 4


def test_two_stores_keep_their_local_locks_apart(store):
    """The lock that queues a process's threads is the store's own (no module state): a second
    store in this process does not share it (it shares only the lease in the table)."""
    from phonon_outbound.store.memory import MemoryStore

    other = MemoryStore()
    with store.dedupe.flow_lock("DEDUPE-LOCK#" + FLOW), other.dedupe.flow_lock("DEDUPE-LOCK#" + FLOW, wait_s=0.5):
        pass


# ================================================================ ledger
def test_claim_chunk_has_one_holder_until_its_lease_runs_out(store):
    first = store.ledger.claim_chunk("J1", 0, 120, T0)
    assert first.state == "claimed" and first.attempts == 1
    item = store.ledger.get_chunk("J1", 0)
    assert item["state"] == ChunkState.IN_PROGRESS and item["lease_until"] == T0 + 120 and item["expires_at"] > T0
    assert first.item == item
    busy = store.ledger.claim_chunk("J1", 0, 120, T0 + 20)
    assert busy.state == "busy" and busy.lease_left_s == pytest.approx(100) and busy.attempts == 1
    assert store.ledger.claim_chunk("J1", 1, 120, T0 + 20).state == "claimed"  # another chunk is another lease
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 120).state == "busy"  # the lease's last moment
    # a holder that died: taken over once its lease ran out, attempts counted
    again = store.ledger.claim_chunk("J1", 0, 120, T0 + 121)
    assert again.state == "claimed" and again.attempts == 2
    assert store.ledger.get_chunk("J1", 0)["lease_until"] == T0 + 241


def test_a_released_chunk_is_claimed_again_at_once_and_a_done_chunk_never(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    store.ledger.release_chunk("J1", 0)
    assert store.ledger.get_chunk("J1", 0)["state"] == ChunkState.RETRY
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 1).state == "claimed"
    store.ledger.settle_chunk("J1", 0, ChunkState.DONE, accepted=3)
    for later in (T0 + 2, T0 + 10_000):
        done = store.ledger.claim_chunk("J1", 0, 120, later)
        assert done.state == "done" and done.attempts == 2 and done.item["accepted"] == 3
    store.ledger.release_chunk("J1", 0)  # a late holder's release leaves DONE alone
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 20_000).state == "done"


def test_settle_chunk_records_the_final_state_and_a_failed_chunk_can_be_redriven(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    store.ledger.settle_chunk("J1", 0, ChunkState.FAILED, failed=2, requests=1, pace=0.5)
    item = store.ledger.get_chunk("J1", 0)
    assert item["state"] == ChunkState.FAILED and item["settled"] is True and item["lease_until"] == 0
    assert item["failed"] == 2 and item["pace"] == 0.5 and item["expires_at"] > T0
    # an operator's redrive: a FAILED chunk is claimed again, and may end DONE
    redrive = store.ledger.claim_chunk("J1", 0, 120, T0 + 5)
    assert redrive.state == "claimed" and redrive.attempts == 2
    store.ledger.settle_chunk("J1", 0, ChunkState.DONE, accepted=2)
    assert store.ledger.get_chunk("J1", 0)["state"] == ChunkState.DONE
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 10).state == "done"


def test_chunk_states_are_written_and_read_back_as_their_plain_wire_strings(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    assert type(store.ledger.get_chunk("J1", 0)["state"]) is str
    store.ledger.settle_chunk("J1", 0, ChunkState.DONE, accepted=1)
    assert [(s, type(s)) for s in [store.ledger.get_chunk("J1", 0)["state"]]] == [("DONE", str)]
    assert [s.value for s in ChunkState] == ["IN_PROGRESS", "RETRY", "WAITING", "DONE", "FAILED"]


def test_settle_open_chunk_never_overrides_a_done_chunk(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    store.ledger.settle_chunk("J1", 0, ChunkState.DONE, accepted=2)
    assert store.ledger.settle_open_chunk("J1", 0, ChunkState.FAILED, failed=2) is False
    item = store.ledger.get_chunk("J1", 0)
    assert item["state"] == ChunkState.DONE and item["accepted"] == 2 and "failed" not in item
    # a chunk nobody holds is settled, and so is one another dispatcher holds right now
    assert store.ledger.settle_open_chunk("J1", 1, ChunkState.FAILED) is True
    assert store.ledger.get_chunk("J1", 1)["state"] == ChunkState.FAILED
    store.ledger.claim_chunk("J1", 2, 120, T0)
    assert store.ledger.settle_open_chunk("J1", 2, ChunkState.FAILED, cancelled=4) is True
    item = store.ledger.get_chunk("J1", 2)
    assert item["state"] == ChunkState.FAILED and item["cancelled"] == 4 and item["lease_until"] == 0


def test_notes_about_a_chunk_in_progress_never_reopen_a_settled_chunk(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    assert store.ledger.note_chunk("J1", 0, waiting_s=3.5) is True
    assert store.ledger.get_chunk("J1", 0)["waiting_s"] == 3.5
    # Given a chunk another dispatcher settled while this one still thought it held it
    store.ledger.settle_chunk("J1", 0, ChunkState.DONE, accepted=2)
    # When the late holder notes that it hands the chunk back
    assert store.ledger.note_chunk("J1", 0, state=ChunkState.RETRY, lease_until=0) is False
    assert store.ledger.note_chunk("J1", 0, state=ChunkState.WAITING, lease_until=0) is False
    # Then the chunk stays DONE: its redelivery is dropped, nothing is sent again
    assert store.ledger.get_chunk("J1", 0)["state"] == ChunkState.DONE
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 1).state == "done"
    assert store.ledger.note_chunk("J1", 9, state=ChunkState.WAITING) is False  # no such chunk: nothing written
    assert store.ledger.get_chunk("J1", 9) is None


def test_a_chunk_handed_back_waiting_is_claimed_again_at_once(store):
    store.ledger.claim_chunk("J1", 0, 120, T0)
    store.ledger.note_chunk("J1", 0, state=ChunkState.WAITING, lease_until=0)
    assert store.ledger.claim_chunk("J1", 0, 120, T0 + 1).state == "claimed"


def test_count_settled_counts_each_chunk_once_whatever_the_retries(store):
    store.jobs.put_job("J1", {"key": "k"})
    counted, meta = store.ledger.count_settled("J1", 0, accepted=3, failed=1)
    assert counted is True and meta["chunks_settled"] == 1 and meta["accepted"] == 3 and meta["failed"] == 1
    # a retry after a crash between settling and counting: not counted again, the job as it is
    counted, meta = store.ledger.count_settled("J1", 0, accepted=3, failed=1)
    assert counted is False and meta["chunks_settled"] == 1 and meta["accepted"] == 3
    assert store.ledger.count_settled("J1", 2, accepted=1)[0] is True
    assert store.ledger.count_settled("J1", 1, accepted=1)[0] is True
    meta = store.jobs.get_job("J1")
    assert meta["chunks_settled"] == 3 and meta["accepted"] == 5
    assert {int(c) for c in meta["settled_set"]} == {0, 1, 2}


def test_count_settled_after_compaction_still_refuses_a_counted_chunk(store):
    store.ledger.compact_at = 3
    store.jobs.put_job("J1", {"key": "k"})
    for c in (0, 1, 2, 3, 5):
        assert store.ledger.count_settled("J1", c, accepted=1)[0] is True
    meta = store.jobs.get_job("J1")
    assert meta["settled_below"] == 4 and {int(c) for c in meta["settled_set"]} == {5}
    for c in (0, 3, 5):
        assert store.ledger.count_settled("J1", c, accepted=1)[0] is False
    assert store.ledger.count_settled("J1", 4, accepted=1)[0] is True
    assert store.jobs.get_job("J1")["chunks_settled"] == 6 and store.jobs.get_job("J1")["accepted"] == 6


# ================================================================ jobs
def test_create_job_writes_once_and_puts_the_job_on_the_active_index(store):
    assert store.jobs.create_job("J1", {"key": "a.csv", "notes": ["x" * 10_000]}) is True
    assert store.jobs.create_job("J1", {"key": "b.csv"}) is False
    meta = store.jobs.get_job("J1")
    assert meta["key"] == "a.csv" and meta["active_shard"] == "A" and len(meta["notes"][0]) < 10_000
    assert meta["pk"] == "JOB#J1" and meta["sk"] == "META" and meta["expires_at"] > time.time()
    assert store.jobs.get_job("J404") is None


def test_put_job_replaces_the_item_and_update_job_sets_attributes(store):
    store.jobs.put_job("J1", {"key": "a.csv", "rows": 3})
    store.jobs.put_job("J1", {"key": "a.csv", "chunks": 2})
    assert "rows" not in store.jobs.get_job("J1")
    out = store.jobs.update_job("J1", ingest_done=True, error="e" * 100_000, pace=0.25)
    assert out["ingest_done"] is True and len(out["error"]) == MAX_TEXT_CHARS and out["pace"] == 0.25
    assert out["chunks"] == 2 and store.jobs.get_job("J1") == out


def test_a_completed_job_leaves_the_stale_jobs_view(store):
    store.jobs.create_job("J1", {"key": "a"})
    store.jobs.create_job("J2", {"key": "b"})
    later = int(time.time()) + 10
    assert sorted(j for j, _ in store.jobs.stale_jobs(later)) == ["J1", "J2"]
    assert list(store.jobs.stale_jobs(int(time.time()) - 3600)) == []
    out = store.jobs.update_job("J1", completed=True)
    assert "active_shard" not in out
    assert [j for j, _ in store.jobs.stale_jobs(later)] == ["J2"]


def test_add_to_job_adds_counters(store):
    store.jobs.put_job("J1", {"key": "k", "accepted": 2})
    store.jobs.add_to_job("J1", accepted=3, rejected=1)
    meta = store.jobs.add_to_job("J1", rejected=1)
    assert meta["accepted"] == 5 and meta["rejected"] == 2


def test_an_expired_job_reads_as_absent(store):
    expired_writes(store)
    store.jobs.put_job("J1", {"key": "k"})
    assert store.jobs.get_job("J1") is None


def test_cancel_job_marks_an_open_job_once_and_nothing_else(store):
    store.jobs.create_job("J1", {"key": "k"})
    assert store.jobs.control("J1").cancelled == ""
    assert store.jobs.cancel_job("J1", "input deleted " + "x" * 10_000) is True
    assert store.jobs.control("J1").cancelled.startswith("input deleted")
    assert len(store.jobs.control("J1").cancelled) == MAX_TEXT_CHARS
    assert store.jobs.cancel_job("J1", "operator") is False  # already cancelled: the first reason stays
    assert store.jobs.control("J1").cancelled.startswith("input deleted")
    assert store.jobs.cancel_job("J404", "x") is False and store.jobs.get_job("J404") is None
    assert store.jobs.control("J404").cancelled == ""
    store.jobs.create_job("J2", {"key": "k"})
    store.jobs.update_job("J2", completed=True)
    assert store.jobs.cancel_job("J2", "late") is False and store.jobs.control("J2").cancelled == ""
    store.jobs.create_job("J3", {"key": "k", "completed": False})
    assert store.jobs.cancel_job("J3", "x") is True


def test_claim_object_new_duplicate_and_resume_after_a_lapsed_lease(store):
    assert store.jobs.claim_object("b/k#v1", "J1", 60, T0) == "new"
    assert store.jobs.claim_object("b/k#v1", "J2", 60, T0 + 30) == "duplicate"  # its ingest still runs
    assert store.jobs.claim_object("b/k#v1", "J2", 60, T0 + 61) == "resume"  # a crashed ingest
    assert store.jobs.claim_object("b/k#v1", "J2", 60, T0 + 100) == "duplicate"  # resumed: a new lease
    assert store.jobs.claim_object("b/k#v2", "J3", 60, T0) == "new"  # another version is another object


def test_renew_object_extends_the_lease_and_a_done_object_is_never_resumed(store):
    store.jobs.claim_object("b/k#v1", "J1", 60)
    store.jobs.renew_object("b/k#v1", 3600)
    assert store.jobs.claim_object("b/k#v1", "J2", 60, time.time() + 120) == "duplicate"
    store.jobs.renew_object("b/k#v1", 0, done=True)
    assert store.jobs.claim_object("b/k#v1", "J2", 60, time.time() + 10_000) == "duplicate"


def test_jobs_for_key_lists_live_index_items_oldest_upload_first(store):
    # job ids sort the other way round from their uploads
    store.jobs.index_job("b", "in/a.csv", "J1", {"version": "v2", "uploaded_at": "2026-01-02T00:00:00Z"})
    store.jobs.index_job("b", "in/a.csv", "J2", {"version": "v1", "uploaded_at": "2026-01-01T00:00:00Z"})
    store.jobs.index_job("b", "in/a.csv", "J2", {"version": "v1", "uploaded_at": "2026-01-01T00:00:00Z"})
    store.jobs.index_job("b", "in/other.csv", "J9", {"version": "v9", "uploaded_at": "2026-01-03T00:00:00Z"})
    store.jobs.claim_report_name("b", "in/a.csv", "20260101T000000Z", "J1")  # not a job of the key
    assert [(i["job"], i["version"]) for i in store.jobs.jobs_for_key("b", "in/a.csv")] == [("J2", "v1"), ("J1", "v2")]
    expired_writes(store)
    store.jobs.index_job("b", "in/a.csv", "J0", {"version": "v0", "uploaded_at": "2025-01-01T00:00:00Z"})
    assert [i["job"] for i in store.jobs.jobs_for_key("b", "in/a.csv")] == ["J2", "J1"]
    assert store.jobs.jobs_for_key("b", "in/none.csv") == []


def test_jobs_for_key_breaks_an_upload_time_tie_by_the_report_name_each_job_claimed(store):
    # Given three uploads of one key with one whole-second upload time (EventBridge's `time`),
    # created as ingest creates them: each claims the next free report stamp of the key. Their
    # job ids sort the other way round from their creation (the Query's order).
    at = "2026-11-30T10:00:05.000+00:00"
    for job in ("JC", "JB", "JA"):
        stamp = next(f"20261130T100005.{ms:03d}Z" for ms in range(10)
                     if store.jobs.claim_report_name("b", "in/a.csv", f"20261130T100005.{ms:03d}Z", job))
        store.jobs.create_job(job, {"key": "in/a.csv", "uploaded_at": at,
                                    "report_csv_key": report_keys("in/a.csv", stamp)[0]})
        store.jobs.index_job("b", "in/a.csv", job, {"version": f"v-{job}", "uploaded_at": at})
    # and an upload a second earlier, by a job created before report names had stamps
    store.jobs.create_job("JZ", {"key": "in/a.csv"})
    store.jobs.index_job("b", "in/a.csv", "JZ", {"version": "v-JZ", "uploaded_at": "2026-11-30T10:00:04.000+00:00"})
    # Then the order is the uploads', the last created last: the key's newest job is JA
    assert [i["job"] for i in store.jobs.jobs_for_key("b", "in/a.csv")] == ["JZ", "JC", "JB", "JA"]


def test_claim_report_name_first_job_wins_and_its_holder_may_claim_again(store):
    assert store.jobs.claim_report_name("b", "k", "S1", "J1") is True
    assert store.jobs.claim_report_name("b", "k", "S1", "J1") is True
    assert store.jobs.claim_report_name("b", "k", "S1", "J2") is False
    assert store.jobs.claim_report_name("b", "k", "S2", "J2") is True
    assert store.jobs.claim_report_name("b", "other", "S1", "J2") is True


def test_claim_finalize_is_a_lease_a_dead_writers_lease_lapses_and_a_completed_job_is_never_claimed(store):
    assert store.jobs.claim_finalize("J404", 960, T0) is False  # no such job
    store.jobs.create_job("J1", {"key": "k"})
    assert store.jobs.claim_finalize("J1", 960, T0) is True
    assert store.jobs.claim_finalize("J1", 960, T0 + 959) is False  # a live writer is never taken over
    # the writer died half-way (never released): its lease lapses, the next caller takes over
    assert store.jobs.claim_finalize("J1", 960, T0 + 961) is True
    store.jobs.release_finalize("J1")
    assert "finalizing" not in store.jobs.get_job("J1")
    assert store.jobs.claim_finalize("J1", 960, T0 + 962) is True
    store.jobs.release_finalize("J1")
    store.jobs.update_job("J1", completed=True)
    assert store.jobs.claim_finalize("J1", 960, T0 + 10_000) is False
    # a later write of a completed job (outcomes arrived) takes the same lease: writes never overlap
    assert store.jobs.claim_finalize("J1", 960, T0 + 10_000, rewrite=True) is True
    assert store.jobs.claim_finalize("J1", 960, T0 + 10_001, rewrite=True) is False
    store.jobs.release_finalize("J1")
    assert store.jobs.claim_finalize("J1", 960, T0 + 10_002, rewrite=True) is True
    assert store.jobs.claim_finalize("J404", 960, T0, rewrite=True) is False


# ================================================================ rows
OUTCOME = {"status": Status.ACCEPTED.value, "cid": "C", "request_id": "r", "phonon_uuid": "", "reason": "",
           "numbers": []}


def test_put_rows_drops_empty_values_bounds_reasons_and_iter_rows_reads_them_in_row_order(store):
    n = store.rows.put_rows("J1", [{"row": 10, "status": Status.REJECTED.value, "reason": "r" * 10_000, "cid": ""},
                              {"row": 2, "status": Status.REJECTED.value, "reason": "bad phone", "cid": None}])
    assert n == 2
    rows = list(store.rows.iter_rows("J1"))
    assert [r["row"] for r in rows] == [2, 10]
    assert "cid" not in rows[0] and len(rows[1]["reason"]) == MAX_TEXT_CHARS
    assert list(store.rows.iter_rows("J2")) == []
    store.rows.put_rows("J1", [{"row": 2, "status": Status.FAILED.value}])  # idempotent put: replaced
    assert [r["status"] for r in store.rows.iter_rows("J1")] == [Status.FAILED.value, Status.REJECTED.value]
    assert "reason" not in next(store.rows.iter_rows("J1"))


def test_expired_row_items_are_not_read(store):
    store.rows.put_rows("J1", [{"row": 1, "status": Status.REJECTED.value}])
    expired_writes(store)
    store.rows.put_rows("J1", [{"row": 2, "status": Status.REJECTED.value}])
    store.rows.put_outcomes("J1", 0, [{"row": 5, **OUTCOME}], at=1)
    assert [r["row"] for r in store.rows.iter_rows("J1")] == [1]
    assert [r["row"] for r in store.rows.iter_outcomes("J1")] == [1]
    assert store.rows.find_outcome("J1", 5) is None


def test_put_outcomes_holds_a_chunk_in_one_item_and_find_outcome_finds_its_range(store):
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME} for r in (4, 2, 3)], at=7)
    store.rows.put_outcomes("J1", 1, [{"row": r, **OUTCOME} for r in (8, 9)], at=8)
    store.rows.put_outcomes("J1", 2, [], at=9)  # nothing to write
    item = store.rows.find_outcome("J1", 3)
    assert item["sk"] == "OUT#0000000002" and item["chunk"] == 0 and item["last_row"] == 4 and item["n"] == 3
    assert [r["row"] for r in decode_outcomes(item["outcomes"])] == [2, 3, 4]
    assert store.rows.find_outcome("J1", 9)["chunk"] == 1
    for outside in (1, 5, 7, 10):
        assert store.rows.find_outcome("J1", outside) is None


def test_iter_chunk_items_lists_each_settled_chunk_with_its_size_and_time_in_row_order(store):
    store.rows.put_outcomes("J1", 1, [{"row": r, **OUTCOME} for r in (8, 9)], at=8)
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME} for r in (4, 2, 3)], at=7)
    store.rows.put_outcomes("J2", 0, [{"row": 1, **OUTCOME}], at=9)  # another job's
    store.rows.put_rows("J1", [{"row": 20, **OUTCOME}])  # a row item is no chunk item
    items = list(store.rows.iter_chunk_items("J1"))
    assert [(i["chunk"], i["n"], i["at"]) for i in items] == [(0, 3, 7), (1, 2, 8)]
    assert [r["row"] for r in decode_outcomes(items[1]["outcomes"])] == [8, 9]
    assert list(store.rows.iter_chunk_items("J404")) == []


def test_iter_outcomes_merges_chunks_and_rows_in_row_order_and_a_chunk_wins_over_a_row(store):
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME, "phonon_uuid": "u3" if r == 3 else ""} for r in (2, 3, 4)],
                       at=1)
    store.rows.put_rows("J1", [{"row": 1, "status": Status.REJECTED.value, "reason": "bad"},
                          {"row": 3, "status": Status.CANCELLED.value, "reason": "aborted run"}])
    store.rows.set_row_uuid("J1", 4, "u4")  # a webhook's patch: the uuid joins the chunk's outcome
    out = list(store.rows.iter_outcomes("J1"))
    assert [(r["row"], r["status"]) for r in out] == [
        (1, Status.REJECTED.value), (2, Status.ACCEPTED.value), (3, Status.ACCEPTED.value),
        (4, Status.ACCEPTED.value)]
    assert out[2]["phonon_uuid"] == "u3" and out[3]["phonon_uuid"] == "u4" and "phonon_uuid" not in out[1]


def test_an_oversized_chunk_falls_back_to_row_items_keeping_a_patched_uuid(store):
    store.rows.set_row_uuid("J1", 1, "u1")
    store.rows.max_blob = 10  # every chunk's blob is over the limit
    store.rows.put_outcomes("J1", 3, [{"row": r, **OUTCOME, "status": Status.FAILED.value, "reason": "x"} for r in range(4)],
                       at=5)
    assert store.rows.find_outcome("J1", 1) is None
    out = list(store.rows.iter_outcomes("J1"))
    assert [r["row"] for r in out] == [0, 1, 2, 3] and out[1]["phonon_uuid"] == "u1" and out[1]["chunk"] == 3
    assert all(r["status"] == Status.FAILED.value and r["at"] == 5 for r in out)


def test_get_outcome_is_one_rows_entry_of_iter_outcomes(store):
    # chunk 0 settled rows 2-4; the webhook recorded row 3's outcome on its row item; row 7 was
    # rejected (a row item of its own); row 9 has only a webhook's patch (its chunk not settled yet)
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME, "phonon_uuid": f"u{r}"} for r in (2, 3, 4)], at=1)
    store.rows.record_outcome("J1", 3, "u3", {"outcome": "ANSWERED", "duration": 45, "dtmf": "12", "attempts": 1,
                                               "ended_at": "2026-11-30T10:00:50+05:30", "outcome_at": 5,
                                               "outcome_src": "webhook"})
    store.rows.put_rows("J1", [{"row": 7, "status": Status.REJECTED.value, "reason": "bad phone"}])
    store.rows.record_outcome("J1", 9, "u9", {"outcome": "NO_ANSWER", "duration": 0, "outcome_at": 6})
    three = store.rows.get_outcome("J1", 3)
    assert three["status"] == Status.ACCEPTED.value and three["cid"] == "C" and three["phonon_uuid"] == "u3"
    assert (three["outcome"], three["duration"], three["dtmf"], three["attempts"], three["ended_at"]) == (
        "ANSWERED", 45, "12", 1, "2026-11-30T10:00:50+05:30")
    # the same record the whole job's read gives, for every row either kind of item holds
    whole = {r["row"]: r for r in store.rows.iter_outcomes("J1")}
    for row in (2, 3, 4, 7, 9):
        one = store.rows.get_outcome("J1", row)
        assert one is not None and one["row"] == row
        assert {k: one.get(k) for k in whole[row]} == whole[row]
    assert "outcome" not in store.rows.get_outcome("J1", 2)  # no outcome arrived for row 2
    assert store.rows.get_outcome("J1", 9)["outcome"] == "NO_ANSWER" and "status" not in store.rows.get_outcome("J1", 9)
    for nothing in (1, 5, 8):
        assert store.rows.get_outcome("J1", nothing) is None
    assert store.rows.get_outcome("J2", 3) is None


def test_get_outcome_ignores_expired_items(store):
    store.rows.put_rows("J1", [{"row": 1, "status": Status.REJECTED.value}])
    expired_writes(store)
    store.rows.put_rows("J1", [{"row": 2, "status": Status.REJECTED.value}])
    store.rows.put_outcomes("J1", 0, [{"row": 5, **OUTCOME}], at=1)
    assert store.rows.get_outcome("J1", 1)["status"] == Status.REJECTED.value
    assert store.rows.get_outcome("J1", 2) is None and store.rows.get_outcome("J1", 5) is None


def test_set_row_uuid_sets_once_a_same_uuid_is_a_no_op_and_another_conflicts(store):
    store.rows.put_rows("J1", [{"row": 5, "status": Status.ACCEPTED.value, "cid": "C5"}])
    item, newly = store.rows.set_row_uuid("J1", 5, "u5")
    assert newly is True and item["cid"] == "C5" and item["phonon_uuid"] == "u5" and item["row"] == 5
    item, newly = store.rows.set_row_uuid("J1", 5, "u5")
    assert newly is False and item["phonon_uuid"] == "u5"
    with pytest.raises(RowUuidConflict):
        store.rows.set_row_uuid("J1", 5, "other")
    patch, newly = store.rows.set_row_uuid("J1", 6, "u6")  # no row item yet: a status-less patch
    assert newly is True and patch == {"phonon_uuid": "u6", "row": 6}
    assert [(r["row"], r.get("status")) for r in store.rows.iter_rows("J1")] == [(5, Status.ACCEPTED.value), (6, None)]


def test_clear_row_uuid_takes_back_only_that_uuid(store):
    store.rows.set_row_uuid("J1", 5, "u5")
    store.rows.clear_row_uuid("J1", 5, "other")
    assert next(store.rows.iter_rows("J1"))["phonon_uuid"] == "u5"
    store.rows.clear_row_uuid("J1", 5, "u5")
    assert "phonon_uuid" not in next(store.rows.iter_rows("J1"))
    assert store.rows.set_row_uuid("J1", 5, "u5b")[1] is True


def test_any_without_outcome_tells_rows_still_in_flight_from_settled_ones(store):
    # chunk 0 settled rows 2-4 (one outcome item), row 9 settled as a row item, row 6 only patched by a webhook
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME} for r in (2, 3, 4)], at=1)
    store.rows.put_rows("J1", [{"row": 9, "status": Status.FAILED.value, "reason": "x"}])
    store.rows.set_row_uuid("J1", 6, "uuid-6")
    assert store.rows.any_without_outcome("J1", [2, 3, 4, 9]) is False
    assert store.rows.any_without_outcome("J1", [3, 6]) is True  # a webhook's patch is no outcome
    assert store.rows.any_without_outcome("J1", [4, 7]) is True
    assert store.rows.any_without_outcome("J1", []) is False


# ================================================================ limits
def test_limit_items_change_only_on_their_version(store):
    key = "LIMIT#records"
    assert store.limits.get(key) is None
    assert store.limits.put_if_version(key, {"ver": 1, "tat": T0 + 0.25, "log": ""}, None) is True
    assert store.limits.put_if_version(key, {"ver": 1, "tat": T0}, None) is False  # exists already
    assert store.limits.get(key) == {"pk": key, "sk": "-", "ver": 1, "tat": T0 + 0.25, "log": ""}
    assert store.limits.put_if_version(key, {"ver": 2, "tat": T0 + 1}, 7) is False  # a stale version
    assert store.limits.put_if_version(key, {"ver": 2, "open": True}, 1) is True
    assert store.limits.get(key) == {"pk": key, "sk": "-", "ver": 2, "open": True}  # replaced whole
    assert store.limits.put_if_version("BREAKER#F1", {"ver": 1, "open": False}, None) is True
    assert store.limits.put_if_version("BREAKER#F1", {"ver": 2}, 0) is False
    assert store.limits.get("BREAKER#F1")["ver"] == 1 and store.limits.get("BREAKER#F2") is None


def test_the_limits_repository_holds_only_limiter_and_breaker_items(store):
    for key in ("JOB#J1", "DEDUPE#x", "OBJ#b/k"):
        with pytest.raises(ValueError):
            store.limits.put_if_version(key, {"ver": 1}, None)
        with pytest.raises(ValueError):
            store.limits.get(key)


# ================================================================ results
def test_put_results_writes_items_without_empty_values(store):
    n = store.results.put_results([{"phonon-uuid": "u1", "job": "J1", "row": 1, "cid": "", "ref": None},
                           {"phonon-uuid": "u2", "job": "J1", "row": 2}])
    assert n == 2
    assert store.results.get_result("u1") == {"phonon-uuid": "u1", "job": "J1", "row": 1}
    assert store.results.get_result("u404") is None


def test_find_results_finds_every_call_with_one_client_identifier_or_request_id(store):
    store.results.put_results([{"phonon-uuid": "u1", "job": "J1", "row": 1, "client-identifier": "C-7",
                                "request-id": "r1"},
                               {"phonon-uuid": "u2", "job": "J2", "row": 4, "client-identifier": "C-7",
                                "request-id": "r2"},
                               {"phonon-uuid": "u3", "job": "J1", "row": 2, "client-identifier": "C-8",
                                "request-id": "r1"}])
    assert sorted(i["phonon-uuid"] for i in store.results.find_results("client-identifier", "C-7")) == ["u1", "u2"]
    assert sorted(i["phonon-uuid"] for i in store.results.find_results("request-id", "r1")) == ["u1", "u3"]
    assert list(store.results.find_results("client-identifier", "C-9")) == []


def test_upsert_result_binds_once_to_a_row(store):
    store.results.put_results([{"phonon-uuid": "u1", "job": "J1", "row": 1}])
    assert store.results.upsert_result("u1", {"job": "J1", "row": 1, "outcome": "answered", "ref": "J1.1"}) is True
    assert store.results.upsert_result("u1", {"job": "J1", "row": 2, "outcome": "x"}) is False  # another row
    assert store.results.upsert_result("u1", {"job": "J2", "row": 1, "outcome": "x"}) is False
    assert store.results.upsert_result("u1", {"outcome": "x"}) is False  # no row: only for an unbound item
    item = store.results.get_result("u1")
    assert item["outcome"] == "answered" and item["row"] == 1 and item["expires_at"] > time.time()


def test_upsert_result_unmatched_by_ref_until_a_row_claims_it(store):
    # a push with no matching row: bound to its ref, marked unmatched
    assert store.results.upsert_result("u1", {"ref": "J1.5", "unmatched": True, "outcome": "busy", "cid": ""}) is True
    assert "cid" not in store.results.get_result("u1")
    assert store.results.upsert_result("u1", {"ref": "J9.9", "outcome": "x"}) is False  # another ref
    assert store.results.upsert_result("u1", {"outcome": "x"}) is False  # no ref: only for an item without one
    assert store.results.upsert_result("u1", {"ref": "J1.5", "duration": 1.5}) is True  # the same ref adds facts
    # the row turns up: bound to it, the unmatched mark goes
    assert store.results.upsert_result("u1", {"job": "J1", "row": 5, "ref": "J1.5"}) is True
    item = store.results.get_result("u1")
    assert item["job"] == "J1" and item["row"] == 5 and "unmatched" not in item and item["duration"] == 1.5
    # a row with another ref never takes an unmatched item of a different ref
    store.results.upsert_result("u2", {"ref": "J1.6", "unmatched": True})
    assert store.results.upsert_result("u2", {"job": "J1", "row": 7, "ref": "J1.7"}) is False
    assert store.results.upsert_result("u2", {"job": "J1", "row": 6}) is False  # nor a row without a ref
    assert store.results.upsert_result("u2", {"job": "J1", "row": 6, "ref": "J1.6"}) is True
    # a push without a ref, for an item without one
    assert store.results.upsert_result("u3", {"outcome": "x"}) is True
    assert store.results.upsert_result("u3", {"outcome": "y"}) is True
    assert store.results.upsert_result("u3", {"ref": "J1.8", "outcome": "z"}) is True  # an unbound item takes a ref
    assert store.results.get_result("u3")["ref"] == "J1.8"


# ================================================================ the facade
def test_the_facade_is_the_repositories_over_one_retention(store):
    """`Store` holds the six repositories (no forwarding methods any more) and the retention
    they share: `expiry` is the `expires_at` they write, `live` how readers judge it."""
    assert not any(hasattr(store, m) for m in ("claim_chunk", "get_job", "claim_dedupe", "get_item", "put_if"))
    store.jobs.create_job("J1", {"key": "k"})
    store.ledger.claim_chunk("J1", 0, 60, T0)
    assert store.ledger.get_chunk("J1", 0)["state"] == ChunkState.IN_PROGRESS
    store.dedupe.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert store.dedupe.get_claim(h(1))["owner"] == "J1.1"
    assert store.expiry(T0) == int(T0 + store.retention_s)
    assert store.live({"expires_at": store.expiry(T0)}, T0) and not store.live({"expires_at": T0 - 1}, T0)


# ================================================================ outcomes and the report function (issue 12)
FLOW_END = {"outcome": "ANSWERED", "duration": 43, "attempts": 2, "hangup_cause": "NORMAL_CLEARING", "dtmf": "19",
            "ended_at": "2026-11-30T10:00:43.000+05:30", "outcome_at": 100, "outcome_src": "webhook"}


def test_record_outcome_binds_the_uuid_once_records_the_outcome_once_and_a_replay_is_not_new(store):
    store.rows.put_rows("J1", [{"row": 5, "status": Status.ACCEPTED.value, "cid": "C5"}])
    item, newly = store.rows.record_outcome("J1", 5, "u5", FLOW_END)
    assert newly is True and item["cid"] == "C5" and item["phonon_uuid"] == "u5"
    # the same push again (Phonon retries), or the reconciler's pull of it: not new, and the
    # first record's time and source stay
    item, newly = store.rows.record_outcome("J1", 5, "u5", {**FLOW_END, "outcome_at": 200, "outcome_src": "pull"})
    assert newly is False and item["outcome_at"] == 100
    row = next(store.rows.iter_rows("J1"))
    assert (row["outcome"], row["duration"], row["dtmf"], row["outcome_at"], row["outcome_src"]) == (
        "ANSWERED", 43, "19", 100, "webhook")
    with pytest.raises(RowUuidConflict):  # another uuid for the row: nothing written
        store.rows.record_outcome("J1", 5, "other", {**FLOW_END, "outcome": "FAILED"})
    assert next(store.rows.iter_rows("J1"))["outcome"] == "ANSWERED"
    # a row whose uuid came without an outcome (set_row_uuid) gets its outcome recorded as new
    store.rows.set_row_uuid("J1", 6, "u6")
    assert store.rows.record_outcome("J1", 6, "u6", FLOW_END)[1] is True


def test_iter_outcomes_merges_a_webhooks_outcome_into_its_chunks_row_and_clear_takes_it_back(store):
    store.rows.put_outcomes("J1", 0, [{"row": r, **OUTCOME} for r in (1, 2)], at=1)
    store.rows.record_outcome("J1", 2, "u2", {**FLOW_END, "empty": "", "ignored": "x"})
    out = list(store.rows.iter_outcomes("J1"))
    assert "outcome_at" not in out[0]  # no outcome yet
    assert out[1]["phonon_uuid"] == "u2" and out[1]["outcome"] == "ANSWERED" and out[1]["attempts"] == 2
    assert out[1]["status"] == Status.ACCEPTED.value and "ignored" not in out[1]
    store.rows.clear_row_uuid("J1", 2, "u2")
    assert "outcome" not in list(store.rows.iter_outcomes("J1"))[1]


def test_awaiting_outcomes_lists_the_jobs_put_on_it_until_taken_off(store):
    assert list(store.jobs.awaiting_outcomes()) == []
    store.jobs.note_awaiting("J1", True)
    store.jobs.note_awaiting("J2", True)
    store.jobs.note_awaiting("J1", True)  # idempotent
    assert sorted(store.jobs.awaiting_outcomes()) == ["J1", "J2"]
    store.jobs.note_awaiting("J1", False)
    store.jobs.note_awaiting("J9", False)  # not on it: nothing happens
    assert list(store.jobs.awaiting_outcomes()) == ["J2"]


def test_claim_report_slot_books_once_per_previous_value_and_only_for_a_completed_job(store):
    store.jobs.create_job("J1", {"key": "a"})
    assert store.jobs.claim_report_slot("J1", 0, 160) is False  # not completed: nothing to rewrite
    assert store.jobs.claim_report_slot("J404", 0, 160) is False
    store.jobs.update_job("J1", completed=True)
    assert store.jobs.claim_report_slot("J1", 0, 160) is True
    assert store.jobs.claim_report_slot("J1", 0, 170) is False  # someone booked it meanwhile
    assert store.jobs.claim_report_slot("J1", 160, 220) is True
    assert store.jobs.get_job("J1")["report_next_at"] == 220
