"""Pure parts of dispatch: the dedupe identity of a call and the retry backoff."""

from __future__ import annotations

from phonon_outbound.dispatch import ChunkMessage, backoff_s, dedupe_hash

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
