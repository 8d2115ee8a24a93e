"""JSON and JSON Lines contact files (and gzip of each): docs/contact-files.md."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
OPTS = ParseOptions(now=NOW)
CALL = {"client-identifier": "AcmeBankCampaign_001", "start-time": "2026-06-29T09:42:00+05:30",
        "contact-numbers": ["916262772728"], "keys": [{"name": "$flow.key.LeadID", "value": "130586000000165414"}]}


def read(data: bytes | str | object, name: str = "calls.json", opts: ParseOptions = OPTS, start_row: int = 0):
    if not isinstance(data, (bytes, str)):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode("utf-8")
    cf = open_contacts(io.BytesIO(data), name, opts)
    return cf, list(cf.rows(start_row=start_row))


def test_the_api_shape_with_flow_id_gives_the_call_back_unchanged():
    # Given a file in the API's own shape (without security-id)
    cf, rows = read({"flow-id": "wruHzoCK", "calls": [CALL]})
    # Then the flow comes from the file and the call is the same call
    assert cf.flow_id == "wruHzoCK"
    assert rows == [ValidRow(1, "AcmeBankCampaign_001", CALL, [])]
    assert list(rows[0].call) == ["client-identifier", "start-time", "contact-numbers", "keys"]


def test_flow_id_is_found_even_after_the_calls():
    cf, _ = read('{"calls": [], "flow-id": "AbCd1234"}')
    assert cf.flow_id == "AbCd1234"


def test_a_bare_array_has_no_flow_id():
    cf, rows = read([CALL])
    assert cf.flow_id is None and isinstance(rows[0], ValidRow)


def test_a_security_id_and_unknown_fields_are_ignored():
    call = {**CALL, "security-id": "s" * 64, "priority": 3, "flow-id": "zzz"}
    _, rows = read({"calls": [call]})
    assert rows[0].call == CALL


@pytest.mark.parametrize(("numbers", "expected"), [
    ("9876543210", ["919876543210"]),
    (9876543210, ["919876543210"]),
    (919876543210, ["919876543210"]),
    (["+91 98765 43210", 9876543211], ["919876543210", "919876543211"]),
    ("9876543210;9876543211", ["919876543210", "919876543211"]),
])
def test_contact_numbers_may_be_a_string_a_number_or_a_list(numbers, expected):
    _, rows = read([{"client-identifier": "a", "contact-numbers": numbers}])
    assert rows[0].call["contact-numbers"] == expected


def test_a_number_in_scientific_notation_is_named_as_such():
    _, rows = read('[{"client-identifier": "a", "contact-numbers": 9.18E+11}]')
    assert rows[0].reason.startswith("a contact number in contact-numbers is in spreadsheet scientific")


def test_key_names_without_prefix_get_it_and_values_become_text():
    keys = [{"name": "LeadID", "value": 12}, {"name": "$flow.key.Amount", "value": 1.5},
            {"name": "VIP", "value": True}, {"name": "Empty", "value": ""}, {"name": "Null", "value": None}]
    _, rows = read([{"client-identifier": "a", "contact-numbers": "9876543210", "keys": keys}])
    assert rows[0].call["keys"] == [{"name": "$flow.key.LeadID", "value": "12"},
                                    {"name": "$flow.key.Amount", "value": "1.5"},
                                    {"name": "$flow.key.VIP", "value": "true"}]


def test_keys_may_also_be_an_object_and_bad_entries_are_warned_about():
    _, rows = read([{"client-identifier": "a", "contact-numbers": "9876543210", "keys": {"LeadID": "7"}},
                    {"client-identifier": "b", "contact-numbers": "9876543210", "keys": [{"value": 1}, "x"]}])
    assert rows[0].call["keys"] == [{"name": "$flow.key.LeadID", "value": "7"}]
    assert rows[1].warnings == ['keys entry 1 is not {"name": ..., "value": ...}: ignored',
                                'keys entry 2 is not {"name": ..., "value": ...}: ignored']


def test_the_correlation_key_is_reserved_in_json_too():
    keys = [{"name": "OutboundRef", "value": "mine"}, {"name": "X", "value": "1"}]
    _, rows = read([{"client-identifier": "a", "contact-numbers": "9876543210", "keys": keys}])
    assert rows[0].call["keys"] == [{"name": "$flow.key.X", "value": "1"}]
    assert rows[0].warnings == ["key 'OutboundRef' ignored: $flow.key.OutboundRef is reserved for the pipeline's "
                                "own tracking reference"]


def test_elements_that_are_not_call_objects_are_rejected_rows_numbered_by_element():
    _, rows = read([CALL, 5, None, [1], {"contact-numbers": "9876543210"}, {"client-identifier": True}])
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1] == RejectedRow(2, "", "element is not a call object (found int)")
    assert rows[2] == RejectedRow(3, "", "element is not a call object (found null)")
    assert rows[3] == RejectedRow(4, "", "element is not a call object (found an array)")
    assert rows[4] == RejectedRow(5, "", "client-identifier is missing or empty")
    assert rows[5] == RejectedRow(6, "", "client-identifier must be text or a number")


def test_numeric_client_identifiers_are_text_and_duplicates_are_rejected():
    _, rows = read([{"client-identifier": 17, "contact-numbers": "9876543210"},
                    {"client-identifier": "17", "contact-numbers": "9876543211"}])
    assert rows[0].client_id == "17"
    assert rows[1] == RejectedRow(2, "17", "duplicate client-identifier, first seen in row 1")


def test_start_time_rules_apply_and_a_non_text_start_time_is_rejected():
    _, rows = read([{**CALL, "client-identifier": "a", "start-time": "2026-05-01T10:00:00Z"},
                    {**CALL, "client-identifier": "b", "start-time": 1700000000},
                    {**CALL, "client-identifier": "c", "start-time": None}])
    assert "is in the past" in rows[0].reason
    assert rows[1].reason == "start-time must be text such as 2026-06-29T09:30:00+05:30 (found a number)"
    assert "start-time" not in rows[2].call


def test_a_missing_contact_numbers_field_rejects_the_row():
    _, rows = read([{"client-identifier": "a"}])
    assert rows[0].reason == "no contact number (contact-numbers is empty)"


def test_start_row_skips_elements_but_keeps_their_claims():
    _, rows = read([{"client-identifier": "a", "contact-numbers": "9876543210"},
                    {"client-identifier": "b", "contact-numbers": "9876543210"},
                    {"client-identifier": "a", "contact-numbers": "9876543210"}], start_row=2)
    assert rows == [RejectedRow(3, "a", "duplicate client-identifier, first seen in row 1")]


# -- JSON Lines ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["calls.jsonl", "calls.NDJSON", "calls.JsonL.gz"])
def test_json_lines_one_call_per_line_bad_lines_are_rejected_rows_and_the_rest_go_on(name):
    text = ('{"client-identifier": "a", "contact-numbers": "9876543210"}\r\n'
            '{"client-identifier": "b", "contact-numbers": \n'
            '\n'
            '[1, 2]\n'
            '{"client-identifier": "c", "contact-numbers": ["9876543211"]}')
    data = text.encode()
    if name.lower().endswith(".gz"):
        data = gzip.compress(data)
    cf, rows = read(data, name=name)
    assert cf.format == "jsonl" and cf.row_count == 4
    assert [type(r).__name__ for r in rows] == ["ValidRow", "RejectedRow", "RejectedRow", "ValidRow"]
    # blank lines are not rows, like in CSV: rows stay contiguous
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert rows[1].reason.startswith("line is not valid JSON (")
    assert rows[2].reason == "line is not a call object (found an array)"


def test_json_lines_duplicates_and_resume():
    text = "\n".join(json.dumps({"client-identifier": c, "contact-numbers": "9876543210"}) for c in "abab")
    _, rows = read(text, name="x.jsonl", start_row=2)
    assert rows == [RejectedRow(3, "a", "duplicate client-identifier, first seen in row 1"),
                    RejectedRow(4, "b", "duplicate client-identifier, first seen in row 2")]


# -- whole-file problems --------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '[{"client-identifier": "a", "contact-numbers": "9876543210"}, {"client-ident',
    '{"flow-id": "x", "calls": [',
    "[1, 2,]",
    "[] trailing",
    "{'single': 'quotes'}",
])
def test_invalid_json_rejects_the_whole_file_before_any_row(text):
    with pytest.raises(FileRejected) as exc:
        read(text)
    assert exc.value.reason.startswith("not valid JSON")


def test_json_lines_in_a_json_file_get_a_hint():
    with pytest.raises(FileRejected) as exc:
        read('{"client-identifier": "a"}\n{"client-identifier": "b"}\n')
    assert exc.value.reason.startswith("not valid JSON: parse error: trailing garbage")
    assert exc.value.reason.endswith("name the file .jsonl)")


def test_a_truncated_array_says_it_is_truncated():
    with pytest.raises(FileRejected) as exc:
        read('[{"client-identifier": "a"}, ')
    assert "truncated" in exc.value.reason


@pytest.mark.parametrize(("text", "reason"), [
    ('"just a string"', "the top level must be an array of call objects or an object with a \"calls\" array"),
    ('{"flow-id": "x"}', "the object has no \"calls\" array"),
    ('{"calls": {"a": 1}}', "\"calls\" must be an array of call objects"),
])
def test_json_of_the_wrong_shape_is_rejected(text, reason):
    with pytest.raises(FileRejected) as exc:
        read(text)
    assert exc.value.reason == "not valid JSON for a contact file: " + reason


def test_an_empty_array_is_zero_rows():
    cf, rows = read("[]")
    assert rows == [] and cf.row_count == 0


def test_json_with_bom_and_utf16_are_read():
    _, rows = read(b"\xef\xbb\xbf" + json.dumps([CALL]).encode())
    assert rows[0].call == CALL
    _, rows = read(json.dumps([{**CALL, "keys": [{"name": "N", "value": "Zoë"}]}], ensure_ascii=False)
                   .encode("utf-16"))
    assert rows[0].call["keys"] == [{"name": "$flow.key.N", "value": "Zoë"}]


def test_gzip_json_with_upper_case_extension():
    cf, rows = read(gzip.compress(json.dumps({"flow-id": "F1234567", "calls": [CALL]}).encode()), name="A.JSON.GZ")
    assert cf.flow_id == "F1234567" and rows[0].call == CALL
