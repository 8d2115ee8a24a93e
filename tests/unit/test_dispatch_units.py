"""Pure parts of dispatch: the dedupe identity of a call, the retry backoff, and the typed
outcomes (a row's outcome as stored and read back, a chunk's counts derived from its rows)."""

from __future__ import annotations

import pytest

from phonon_outbound.dispatch import ChunkMessage, backoff_s, dedupe_hash
from phonon_outbound.outcomes import ChunkOutcome, Fate, RowOutcome
from phonon_outbound.status import Status
from phonon_outbound.store import OUTCOME_FIELDS, decode_outcomes, encode_outcomes

CORR = "$flow.key.OutboundRef"


def call(**over):
    base = {"client-identifier": "A-1", "contact-numbers": ["919800000001"],
            "keys": [{"name": "$flow.key.Name", "value": "Asha"}, {"name": CORR, "value": "job1.1"}]}
    base.update(over)
    return base


def test_the_same_call_from_another_file_has_the_same_dedupe_identity():
    other_file = call(keys=[{"name": "$flow.key.Name", "value": "Asha"}, {"name": CORR, "value": "job2.9"}])
    assert dedupe_hash("Flow0001", call(), CORR) == dedupe_hash("Flow0001", other_file, CORR)


def test_any_difference_in_flow_id_numbers_start_time_or_keys_makes_another_call():
    h = dedupe_hash("Flow0001", call(), CORR)
    assert dedupe_hash("Flow0002", call(), CORR) != h
    assert dedupe_hash("Flow0001", call(**{"client-identifier": "A-2"}), CORR) != h
    assert dedupe_hash("Flow0001", call(**{"contact-numbers": ["919800000002"]}), CORR) != h
    assert dedupe_hash("Flow0001", call(**{"start-time": "2030-01-01T10:00:00+05:30"}), CORR) != h
    assert dedupe_hash("Flow0001", call(keys=[{"name": "$flow.key.Name", "value": "Asha K"}]), CORR) != h


def test_backoff_grows_exponentially_within_its_cap_and_is_jittered():
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        values = {round(backoff_s(attempt, 2.0, 60.0), 6) for _ in range(20)}
        assert all(ceiling / 2 <= v <= ceiling for v in values)
        assert len(values) > 1


def test_a_chunk_message_carries_no_security_id_field():
    assert "security-id" not in ChunkMessage.model_fields
    assert "security_id" not in ChunkMessage.model_fields


def test_a_row_outcome_is_stored_with_the_outcome_fields_and_read_back_equal():
    row = RowOutcome.of_call(7, call(), Status.ACCEPTED, request_id="req-1", phonon_uuid="u-1", reason="note")
    assert row == RowOutcome(7, Status.ACCEPTED, "A-1", "req-1", "u-1", "note", ("919800000001",))
    item = row.to_item()
    assert tuple(item) == OUTCOME_FIELDS
    assert item["status"] == "ACCEPTED" and item["numbers"] == ["919800000001"]
    # through the stored form, which leaves empty fields out
    failed = RowOutcome.of_call(8, {}, Status.FAILED, reason="HTTP 400")
    assert [RowOutcome.from_item(i) for i in decode_outcomes(encode_outcomes([row.to_item(), failed.to_item()]))] == [
        row, failed]
    assert failed.cid == "" and failed.numbers == ()


def test_a_stored_outcome_with_a_status_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError):
        RowOutcome.from_item({"row": 1, "status": "exhausted"})


def test_a_chunks_counts_are_derived_from_its_rows_and_a_decided_row_keeps_its_outcome():
    out = ChunkOutcome(Fate.SETTLED)
    out.add(RowOutcome(1, Status.ACCEPTED))
    out.add(RowOutcome(2, Status.DUPLICATE))
    out.add(RowOutcome(3, Status.CANCELLED))
    out.add(RowOutcome(1, Status.FAILED, reason="later"))  # row 1 is decided already
    assert out.rows[1].status is Status.ACCEPTED
    assert out.counters() == {"accepted": 1, "failed": 0, "duplicate": 1, "cancelled": 1}
    assert [out.count(s) for s in (Status.ACCEPTED, Status.FAILED, Status.DUPLICATE)] == [1, 0, 1]


def test_a_chunks_fate_is_one_of_four_documented_values():
    assert [f.value for f in Fate] == ["settled", "waiting", "duplicate-delivery", "exhausted"]
