"""Job items stay bounded whatever a file's header looks like (DynamoDB's 400 KB item limit)."""

from __future__ import annotations

from phonon_outbound.store import MAX_NOTE_CHARS, MAX_NOTES, MAX_TEXT_CHARS, bound_job_attrs, bound_notes


def test_notes_are_deduplicated_capped_and_summed_up():
    notes = [f"column {i} has no name: ignored" for i in range(10_000)] + ["column 1 has no name: ignored"]
    kept = bound_notes(notes)
    assert len(kept) == MAX_NOTES + 1
    assert kept[:2] == ["column 0 has no name: ignored", "column 1 has no name: ignored"]
    assert kept[-1] == "... and 9,980 more notes not shown"


def test_long_notes_and_reasons_are_clipped():
    attrs = bound_job_attrs({"notes": ["x" * 10_000], "error": "e" * 100_000, "checkpoint_row": 5})
    assert len(attrs["notes"][0]) == MAX_NOTE_CHARS
    assert len(attrs["error"]) == MAX_TEXT_CHARS
    assert attrs["checkpoint_row"] == 5


def test_the_settled_chunk_set_is_compacted_and_still_counts_each_chunk_once(any_store):
    store = any_store
    SETTLED_SET_COMPACT = 20  # noqa: N806 - the ledger's threshold, made small for the test
    store.ledger.compact_at = SETTLED_SET_COMPACT
    store.jobs.put_job("j1", {"key": "k", "chunks_settled": 0})
    n = 3 * SETTLED_SET_COMPACT
    order = [c for c in range(n) if c != 7] + [7]  # chunk 7 settles last (retried for a while)
    for c in order:
        assert store.ledger.count_settled("j1", c, accepted=1)[0] is True
    for c in (0, 7, n - 1, 5):  # a retry after a crash between settling and counting
        assert store.ledger.count_settled("j1", c, accepted=1)[0] is False
    job = store.jobs.get_job("j1")
    assert job["chunks_settled"] == n and job["accepted"] == n
    assert len(job.get("settled_set") or ()) <= SETTLED_SET_COMPACT + 1
    assert job["settled_below"] > SETTLED_SET_COMPACT
