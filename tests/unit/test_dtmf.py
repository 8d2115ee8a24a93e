"""One DTMF reader (dtmf.py) for the report's `dtmf` column, the `Outbound Call Completed`
event and the opt-out: whatever a push's spelling, the three agree on what was pressed."""

from __future__ import annotations

import json

import pytest

from phonon_outbound import events_out as eo
from phonon_outbound.dtmf import MAX_ITEM_CHARS, MAX_PRESSES, keys_by_attempt, keys_pressed
from phonon_outbound.records import Job
from phonon_outbound.settings import Settings
from phonon_outbound.suppression import opted_out
from phonon_outbound.webhook import outcome_of, parse_push, row_outcome


class Events:
    def __init__(self) -> None:
        self.details: list[dict] = []

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's parameter name
        self.details += [json.loads(e["Detail"]) for e in Entries]
        return {"Entries": [{"EventId": "e"} for _ in Entries], "FailedEntryCount": 0}


def three_readers(push: dict) -> tuple[str | None, str | None, str | None]:
    """(the report's dtmf, the event's dtmf, the opt-out's answer for "9") of one push."""
    body = json.dumps(push)
    parsed = parse_push(body)
    column = row_outcome(parsed, body, "webhook", 0).get("dtmf")
    events = Events()
    attrs = {**outcome_of(parsed), "job": "J1", "row": 1, "flow-id": "DemoFlw1"}
    eo.EventsOut(events).call_completed(parsed, attrs, Job(), dtmf=column)  # as the webhook passes it
    event = events.details[0]["outcome"].get("dtmf")
    return column, event, opted_out(Settings(opt_out_dtmf="9"), body, [])


@pytest.mark.parametrize(("attempt", "keys"), [
    ({"dtmfPressesd": ["1", "#", 9]}, "1#9"),               # Phonon's spelling: strings and numbers
    ({"DTMF_Pressesd": "1*9"}, "1*9"),                      # one string, another case
    ({"dtmf-presses": [{"digit": "9"}, {"Value": 4}]}, "94"),  # objects with a digit-like field
    ({"dtmfPressesd": ["A", "<b>9"]}, "A9"),                # A-D are keys; lower-case text is noise
    ({"dtmfPressesd": [True, None, 9.5, ["9"], "<9>"]}, "9"),  # what is not a key is dropped
    ({"dtmfPressesd": ["1"], "dtmfExtra": ["9"]}, "19"),    # every dtmf field, in order
])
def test_the_report_the_event_and_the_opt_out_read_the_same_keys(attempt, keys):
    push = {"phonon-uuid": "u1", "callDetails": [{"duration": "5", "connectTime": "2026-11-30 10:00:00", **attempt}]}
    column, event, optout = three_readers(push)
    assert column == event == keys
    assert optout == ("pressed 9" if "9" in keys else None)


def test_an_opt_out_key_after_many_others_still_counts_and_the_column_keeps_its_bound():
    presses = ["1"] * 200 + ["9"]
    column, event, optout = three_readers({"phonon-uuid": "u1", "callDetails": [{"duration": "5",
                                                                                 "dtmfPressesd": presses}]})
    assert column == event == "1" * eo.MAX_DTMF_CHARS
    assert optout == "pressed 9"


def test_the_column_shows_the_chosen_attempt_and_the_opt_out_reads_every_attempt():
    push = {"phonon-uuid": "u1", "callDetails": [
        {"duration": "7", "connectTime": "2026-11-30 10:00:00", "dtmfPressesd": ["9"]},  # answered: pressed 9
        {"duration": "0", "hangupCause": "NO_ANSWER", "dtmfPressesd": []}]}
    column, event, optout = three_readers(push)
    assert column == event == "9"  # the answered attempt speaks for the call
    push["callDetails"][0]["dtmfPressesd"] = []
    push["callDetails"][1]["dtmfPressesd"] = ["9"]
    column, event, optout = three_readers(push)
    assert column is None and event is None  # the chosen (answered) attempt pressed nothing …
    assert optout == "pressed 9"  # … but a "stop calling me" in any attempt is obeyed


@pytest.mark.parametrize("wrap", [
    lambda push: {"body": push},
    lambda push: {"body": json.dumps(push)},
    lambda push: push,
])
def test_a_wrapped_push_is_read_alike(wrap):
    push = {"phonon-uuid": "u1", "callDetails": [{"dtmfPressesd": ["4"]}, {"dtmfPressesd": ["2", "9"]}]}
    assert keys_by_attempt(wrap(push)) == ["4", "29"]
    assert keys_by_attempt(json.dumps(wrap(push))) == ["4", "29"]
    assert keys_pressed(json.dumps(wrap(push)), 1, 1) == "2"


def test_hostile_bodies_are_bounded_and_never_raise():
    huge = {"phonon-uuid": "u1", "callDetails": [{"dtmfPressesd": ["1" * 10_000] + ["2"] * (MAX_PRESSES + 50)}]}
    [keys] = keys_by_attempt(json.dumps(huge))
    assert keys == "1" * MAX_ITEM_CHARS + "2" * (MAX_PRESSES - 1)
    for body in ("{not json dtmf", "[\"dtmf\"]", json.dumps({"callDetails": "dtmf"}), "dtmf" + "[" * 100_000,
                 json.dumps({"body": "dtmf not json"}), b"\xff dtmf", None):
        assert keys_by_attempt(body) == []
    assert keys_by_attempt(json.dumps({"callDetails": [None, 5, {"dtmf": "1"}]})) == ["", "", "1"]
