"""The push schema and a push's outcome on odd but valid input: JSON null for the list fields
(`keys`, `recordingUrls`) means "none", as for `callDetails`, and an attempt's talk time is not
taken from times further apart than the `duration` field may be."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from phonon_outbound.webhook import MAX_RECORDINGS, MAX_TALK_S, WebhookError, parse_push, row_outcome


@pytest.mark.parametrize(("field", "attr"), [("keys", "keys"), ("recordingUrls", "recording_urls"),
                                             ("callDetails", "call_details"), ("smsDetails", "sms_details"),
                                             ("emailDetails", "email_details")])
def test_a_list_field_sent_as_null_is_read_as_none(field, attr):
    push = parse_push(json.dumps({"phonon-uuid": "u1", field: None}))
    assert push.phonon_uuid == "u1" and getattr(push, attr) is None
    assert row_outcome(push, None, "webhook", 5)["outcome"] == "COMPLETED"  # nothing more said: no crash


def test_the_list_fields_keep_their_bounds():
    with pytest.raises(WebhookError) as err:
        parse_push(json.dumps({"phonon-uuid": "u1", "recordingUrls": ["https://r/x"] * (MAX_RECORDINGS + 1)}))
    assert err.value.status == 400 and "recordingUrls" in err.value.message
    # the other accepted forms are unchanged: one URL as a string, `keys` as an object
    push = parse_push(json.dumps({"phonon-uuid": "u1", "recordingUrls": "https://r/x", "keys": {"a": "1"}}))
    assert push.recording_urls == ["https://r/x"] and [(k.name, k.value) for k in push.keys or []] == [("a", "1")]


def _outcome(attempt: dict) -> dict:
    body = json.dumps({"phonon-uuid": "u1", "callDetails": [attempt]})
    return row_outcome(parse_push(body), body, "webhook", 0)


def test_talk_time_from_unbelievable_times_falls_back_to_the_duration_field():
    far = {"connectTime": "0001-01-01T00:00:00", "endTime": "9999-12-31T23:59:59", "hangupCause": "NORMAL_CLEARING"}
    # without a duration: no talk time at all (not 315,537,897,599 s)
    out = _outcome(far)
    assert out["outcome"] == "ANSWERED" and "duration" not in out
    # with one: the duration field (milliseconds), as when the times do not read as times
    assert _outcome({**far, "duration": "42000"})["duration"] == 42


def test_talk_time_up_to_the_bound_is_read_from_the_times():
    ok = {"connectTime": "2024-01-01T00:00:00+05:30", "endTime": "2024-01-01T00:02:05+05:30", "duration": "1"}
    assert _outcome(ok)["duration"] == 125
    # the bound itself (the duration field's MAX_DURATION ms) is still believed; one second more is not
    start = "2024-01-01T00:00:00"
    end = (datetime.fromisoformat(start) + timedelta(seconds=MAX_TALK_S)).isoformat()
    assert _outcome({"connectTime": start, "endTime": end})["duration"] == MAX_TALK_S
    later = (datetime.fromisoformat(start) + timedelta(seconds=MAX_TALK_S + 1)).isoformat()
    assert "duration" not in _outcome({"connectTime": start, "endTime": later})
