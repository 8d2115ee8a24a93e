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

