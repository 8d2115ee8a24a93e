"""Contract tests of the dispatch side of `Store`: dedupe claims and the chunk ledger, each
method on its own, against DynamoDB (moto built from template.yaml), with explicit clocks.

These are the promises dispatch builds "never call a customer twice" on (docs/design.md,
"Every row ends with a status"): a claim another owner holds within the window is a conflict,
a claim past its window is not (DynamoDB deletes TTL'd items late, so the code must ignore
them itself); a chunk has one holder at a time, a DONE chunk is never handed out or reopened.
"""

from __future__ import annotations

import pytest

T0 = 1_800_000_000.0
WINDOW = 3600.0
FLOW = "Flow0001"


def h(i: int) -> str:
    return f"{i:064x}"


def claim_item(store, i: int) -> dict:
    return store.get_item(f"DEDUPE#{h(i)}")


# ---------------------------------------------------------------- claim_dedupe
def test_claim_dedupe_takes_new_claims_and_a_retry_of_the_same_owner_decides_the_same(store):
    claims = [(h(1), "J1.1"), (h(2), "J1.2")]
    assert store.claim_dedupe(FLOW, claims, WINDOW, T0) == {}
    item = claim_item(store, 1)
    assert item["owner"] == "J1.1" and item["expires"] == T0 + WINDOW
    # TTL: an hour after the window (never past the data retention)
    assert item["expires_at"] == int(T0 + WINDOW) + 3600
    # the same chunk again (a retry): no conflict, and its window is not stretched
    assert store.claim_dedupe(FLOW, claims, WINDOW, T0 + 100) == {}
    assert claim_item(store, 1)["expires"] == T0 + WINDOW


def test_claim_dedupe_reports_another_owners_claim_within_the_window_and_keeps_it(store):
    store.claim_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J1.2")], WINDOW, T0)
    conflicts = store.claim_dedupe(FLOW, [(h(1), "J2.7"), (h(3), "J2.8")], WINDOW, T0 + WINDOW - 1)
    assert conflicts == {h(1): "J1.1"}
    assert claim_item(store, 1)["owner"] == "J1.1"  # the first owner keeps it
    assert claim_item(store, 3)["owner"] == "J2.8"  # the other call of the chunk is claimed


def test_claim_dedupe_ignores_a_claim_past_its_window_even_while_the_item_still_exists(store):
    # Given a claim whose window ended (its item not yet deleted by DynamoDB's TTL, which is late)
    store.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert claim_item(store, 1) is not None
    # When the same call comes from another file just after the window
    conflicts = store.claim_dedupe(FLOW, [(h(1), "J2.1")], WINDOW, T0 + WINDOW + 1)
    # Then it is no duplicate, and the claim is now the new owner's, for a new window
    assert conflicts == {}
    item = claim_item(store, 1)
    assert item["owner"] == "J2.1" and item["expires"] == T0 + 2 * WINDOW + 1
    # and a third file within that new window is the duplicate of the second
    assert store.claim_dedupe(FLOW, [(h(1), "J3.1")], WINDOW, T0 + WINDOW + 2) == {h(1): "J2.1"}


def test_claim_dedupe_renews_the_same_owners_expired_claim(store):
    store.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0)
    assert store.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0 + WINDOW + 5) == {}
    assert claim_item(store, 1)["expires"] == T0 + 2 * WINDOW + 5


def test_claim_dedupe_decides_every_call_of_a_chunk_bigger_than_one_batch_read(store):
    mine = [(h(i), f"J1.{i}") for i in range(1, 251)]
    assert store.claim_dedupe(FLOW, mine, WINDOW, T0) == {}
    theirs = [(h(i), f"J2.{i}") for i in range(1, 251)]
    conflicts = store.claim_dedupe(FLOW, theirs, WINDOW, T0 + 1)
    assert conflicts == {h(i): f"J1.{i}" for i in range(1, 251)}


def test_release_dedupe_gives_back_only_the_owners_own_claims(store):
    store.claim_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J1.2")], WINDOW, T0)
    store.release_dedupe(FLOW, [(h(1), "J1.1"), (h(2), "J9.9")])
    assert claim_item(store, 1) is None
    assert claim_item(store, 2)["owner"] == "J1.2"
    assert store.claim_dedupe(FLOW, [(h(1), "J2.1")], WINDOW, T0 + 1) == {}


def test_claim_dedupe_waits_for_no_lock_of_another_flow(store):
    store.lock_wait_s = 0.2
    store.state.put_item(Item={"pk": "DEDUPE-LOCK#OtherFlw", "sk": "-", "token": "x", "lease_until": int(T0) * 2})
    assert store.claim_dedupe(FLOW, [(h(1), "J1.1")], WINDOW, T0) == {}
    with pytest.raises(TimeoutError):  # the busy flow's own claims wait, then give up
        store.claim_dedupe("OtherFlw", [(h(1), "J1.1")], WINDOW, T0)


# ---------------------------------------------------------------- claim_chunk
def chunk_item(store, job: str = "J1", chunk: int = 0) -> dict:
    return store.state.get_item(Key={"pk": f"JOB#{job}", "sk": f"CHUNK#{chunk:08d}"}, ConsistentRead=True)["Item"]


def test_claim_chunk_has_one_holder_until_its_lease_runs_out(store):
    first = store.claim_chunk("J1", 0, 120, T0)
    assert first.state == "claimed" and first.attempts == 1
    item = chunk_item(store)
    assert item["state"] == "IN_PROGRESS" and float(item["lease_until"]) == T0 + 120 and int(item["expires_at"]) > T0
    busy = store.claim_chunk("J1", 0, 120, T0 + 20)
    assert busy.state == "busy" and busy.lease_left_s == pytest.approx(100)
    assert store.claim_chunk("J1", 1, 120, T0 + 20).state == "claimed"  # another chunk is another lease
    # a holder that died: taken over once its lease ran out, attempts counted
    again = store.claim_chunk("J1", 0, 120, T0 + 121)
    assert again.state == "claimed" and again.attempts == 2


def test_a_released_chunk_is_claimed_again_at_once_and_a_done_chunk_never(store):
    store.claim_chunk("J1", 0, 120, T0)
    store.release_chunk("J1", 0)
    assert chunk_item(store)["state"] == "RETRY"
    assert store.claim_chunk("J1", 0, 120, T0 + 1).state == "claimed"
    store.settle_chunk("J1", 0, "DONE", accepted=3)
    for later in (T0 + 2, T0 + 10_000):
        assert store.claim_chunk("J1", 0, 120, later).state == "done"
    store.release_chunk("J1", 0)  # a late holder's release leaves DONE alone
    assert store.claim_chunk("J1", 0, 120, T0 + 20_000).state == "done"


# ---------------------------------------------------------------- settle_chunk
def test_settle_chunk_records_the_final_state_and_a_failed_chunk_can_be_redriven(store):
    store.claim_chunk("J1", 0, 120, T0)
    store.settle_chunk("J1", 0, "FAILED", failed=2, requests=1)
    item = chunk_item(store)
    assert item["state"] == "FAILED" and item["settled"] is True and int(item["lease_until"]) == 0
    assert int(item["failed"]) == 2 and int(item["expires_at"]) > T0
    # an operator's redrive: a FAILED chunk is claimed again, and may end DONE
    redrive = store.claim_chunk("J1", 0, 120, T0 + 5)
    assert redrive.state == "claimed" and redrive.attempts == 2
    store.settle_chunk("J1", 0, "DONE", accepted=2)
    assert chunk_item(store)["state"] == "DONE"
    assert store.claim_chunk("J1", 0, 120, T0 + 10).state == "done"


def test_settle_open_chunk_never_overrides_a_done_chunk(store):
    store.claim_chunk("J1", 0, 120, T0)
    store.settle_chunk("J1", 0, "DONE", accepted=2)
    assert store.settle_open_chunk("J1", 0, "FAILED") is False
    assert chunk_item(store)["state"] == "DONE"
    # a chunk nobody holds is settled
    assert store.settle_open_chunk("J1", 1, "FAILED") is True
    assert chunk_item(store, chunk=1)["state"] == "FAILED"


def test_notes_about_a_chunk_in_progress_never_reopen_a_settled_chunk(store):
    # Given a chunk another dispatcher settled while this one still thought it held it
    store.claim_chunk("J1", 0, 120, T0)
    store.settle_chunk("J1", 0, "DONE", accepted=2)
    # When the late holder notes that it hands the chunk back
    store.note_chunk("J1", 0, state="RETRY", lease_until=0)
    store.note_chunk("J1", 0, state="WAITING", lease_until=0)
    # Then the chunk stays DONE: its redelivery is dropped, nothing is sent again
    assert chunk_item(store)["state"] == "DONE"
    assert store.claim_chunk("J1", 0, 120, T0 + 1).state == "done"


# ---------------------------------------------------------------- a claim owner's outcome
def test_any_without_outcome_tells_rows_still_in_flight_from_settled_ones(store):
    outcome = {"status": "ACCEPTED", "cid": "C", "request_id": "r", "phonon_uuid": "", "reason": "", "numbers": []}
    # chunk 0 settled rows 2-4 (one outcome item), row 9 settled as a row item, row 6 only patched by a webhook
    store.put_outcomes("J1", 0, [{"row": r, **outcome} for r in (2, 3, 4)], at=1)
    store.put_rows("J1", [{"row": 9, "status": "FAILED", "reason": "x"}])
    store.set_row_uuid("J1", 6, "uuid-6")
    assert store.any_without_outcome("J1", [2, 3, 4, 9]) is False
    assert store.any_without_outcome("J1", [3, 6]) is True  # a webhook's patch is no outcome
    assert store.any_without_outcome("J1", [4, 7]) is True
    assert store.any_without_outcome("J1", []) is False
