"""Hostile contact files the first audits did not list (issue 10, "build for the rule"): JSON
nested far deeper than any contact file, a JSON Lines line that is one deep array, key names
seen inside nested values, repeated or empty flow-variable headers, and a gzip whose
decompressed size is out of all proportion to its stored size."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts
from phonon_outbound.contacts.dedupe import DigestSpill

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
OPTS = ParseOptions(now=NOW)


def read(data: bytes, name: str, opts: ParseOptions = OPTS):
    cf = open_contacts(io.BytesIO(data), name, opts)
    return cf, list(cf.rows())


def reject(data: bytes, name: str, opts: ParseOptions = OPTS) -> str:
    with pytest.raises(FileRejected) as exc:
        read(data, name, opts)
    return exc.value.reason


# ------------------------------------------------------------------ nesting
@pytest.mark.parametrize("doc", [
    b"[" * 10_000 + b"]" * 10_000,
    b'[{"client-identifier":"A","contact-numbers":["9876543210"],"keys":{"x":' + b"[" * 10_000
    + b"]" * 10_000 + b"}}]",
    b'{"flow-id":"ABCD1234","calls":[' + b"{\"a\":" * 5_000 + b"1" + b"}" * 5_000 + b"]}",
])
def test_json_nested_deeper_than_any_contact_file_is_rejected_before_the_parser_holds_its_path(doc):
    # The parser keeps every level's path ("item.item.item…"): memory grows with the square of
    # the depth, 250 MB at 10,000 levels, the whole function at 100,000 (a 200 kB file).
    reason = reject(doc, "calls.json")
    assert reason.startswith("not valid JSON for a contact file: nested more than 64 levels deep")


def test_a_json_lines_line_nested_past_the_decoder_s_recursion_limit_is_one_rejected_row():
    data = (b'{"client-identifier":"A","contact-numbers":["9876543210"]}\n'
            + b"[" * 100_000 + b"]" * 100_000 + b"\n"
            + b'{"client-identifier":"B","contact-numbers":["9876543211"],"keys":{"x":' + b"[" * 900
            + b"]" * 900 + b"}}\n"
            + b'{"client-identifier":"C","contact-numbers":["9876543212"]}\n')
    cf, rows = read(data, "calls.jsonl")
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert isinstance(rows[0], ValidRow) and isinstance(rows[3], ValidRow)
    assert isinstance(rows[1], RejectedRow) and "nested more than 64 levels" in rows[1].reason
    assert isinstance(rows[2], RejectedRow) and "nested more than 64 levels" in rows[2].reason


def test_keys_inside_nested_values_are_not_taken_for_the_call_object_s_own_keys():
    doc = [{"client-identifier": "A", "contact-numbers": ["9876543210"], "keys": {"Mobile": "x"},
            "extra": {"client-identifier": "NOT-ME", "Phone": "9123456780"}}]
    cf, rows = read(json.dumps(doc).encode(), "calls.json")
    assert isinstance(rows[0], ValidRow) and rows[0].client_id == "A"
    assert rows[0].call["contact-numbers"] == ["919876543210"]
    assert not any("phone numbers also from" in n for n in cf.notes), cf.notes


def test_a_nested_client_identifier_does_not_make_two_objects_duplicates():
    doc = [{"client-identifier": "A", "contact-numbers": ["9876543210"], "meta": {"client-identifier": "Z"}},
           {"client-identifier": "B", "contact-numbers": ["9876543211"], "meta": {"client-identifier": "Z"}}]
    cf, rows = read(json.dumps(doc).encode(), "calls.json")
    assert [type(r) for r in rows] == [ValidRow, ValidRow]


# ------------------------------------------------------------------ flow-variable headers
def test_a_repeated_flow_variable_header_gives_one_variable_from_its_first_column():
    data = b"client-identifier,Phone,Name,City, Name \nA,9876543210,Ann,Pune,Bob\nB,9876543211,,Goa,Cat\n"
    cf, rows = read(data, "leads.csv")
    names = [[k["name"] for k in r.call["keys"]] for r in rows]
    assert names == [["$flow.key.Name", "$flow.key.City"], ["$flow.key.City"]]
    assert rows[0].call["keys"][0]["value"] == "Ann"
    assert any("column 5" in n and "$flow.key.Name" in n for n in cf.notes), cf.notes


def test_a_header_that_is_only_the_flow_key_prefix_adds_no_nameless_variable():
    data = "client-identifier,phone,$flow.key.,$FLOW.KEY.Région\nA,9876543210,v1,v2\n".encode()
    cf, rows = read(data, "leads.csv")
    assert rows[0].call["keys"] == [{"name": "$flow.key.Région", "value": "v2"}]
    assert any("column 3" in n and "no name after $flow.key." in n for n in cf.notes), cf.notes
    assert "v1" not in json.dumps(cf.notes)


# ------------------------------------------------------------------ gzip
def test_a_gzip_expanding_hundreds_of_times_is_rejected_as_a_bomb_not_read_as_millions_of_rows():
    # 8 MB of four-byte lines from ~8 kB of gzip: a 2 GiB object of this would be read for hours
    # and report a billion rows
    bomb = gzip.compress(b"client-identifier,phone\n" + b"a,1\n" * 2_000_000, compresslevel=9)
    opts = ParseOptions(now=NOW, max_compression_ratio=200, min_ratio_check_bytes=1 << 20)
    reason = reject(bomb, "leads.csv.gz", opts)
    assert reason.startswith("decompressed size is more than 200 times the compressed size (max_compression_ratio)")


def test_an_ordinary_gzip_well_under_the_ratio_is_read():
    rows = b"".join(b"C%07d,98%08d,Customer %d\n" % (i, i, i) for i in range(50_000))
    data = gzip.compress(b"client-identifier,phone,Name\n" + rows)
    opts = ParseOptions(now=NOW, max_compression_ratio=200, min_ratio_check_bytes=1 << 20)
    cf, got = read(data, "leads.csv.gz", opts)
    assert len(got) == 50_000 and all(isinstance(r, ValidRow) for r in got)


# ------------------------------------------------------------------ no cell value in a reason
def test_a_day_first_start_time_with_more_text_does_not_echo_the_text():
    data = b"client-identifier,phone,start-time\nA,9876543210,05/06/2026 call Ravi on 9123456780\n"
    cf, rows = read(data, "leads.csv")
    assert isinstance(rows[0], RejectedRow)
    assert "9123456780" not in rows[0].reason and "Ravi" not in rows[0].reason
    assert rows[0].reason.startswith("start-time (a value of 34 characters) is not year-first")


def test_a_gzip_with_garbage_after_its_member_does_not_echo_the_garbage():
    data = gzip.compress(b"client-identifier,phone\nA,9876543210\n") + b"98765432"
    reason = reject(data, "leads.csv.gz")
    assert "98" not in reason, reason


# ------------------------------------------------------------------ many numbers in a row
def test_thousands_of_unusable_numbers_make_one_bounded_warning_or_reason():
    bad = ";".join(str(i) for i in range(1, 5001))  # 5,000 values none of which is a number
    data = f'client-identifier,phone,Mobile\nA,"9876543210;{bad}",\nB,"{bad}",\n'.encode()
    cf, rows = read(data, "leads.csv")
    ok, rejected = rows
    assert isinstance(ok, ValidRow) and ok.call["contact-numbers"] == ["919876543210"]
    assert len("; ".join(ok.warnings)) < 1000
    assert "and 4,995 more numbers that cannot be used" in "; ".join(ok.warnings)
    assert isinstance(rejected, RejectedRow) and len(rejected.reason) < 1000
    assert "and 4,995 more numbers that cannot be used" in rejected.reason


def test_numbers_repeated_across_many_columns_are_sent_once_in_column_order():
    cols = 6
    cells = ['"' + ";".join(f"98{(i + c) % 3000:08d}" for i in range(3000)) + '"' for c in range(cols)]
    header = "client-identifier," + ",".join(f"phone{c}" for c in range(cols))
    cf, rows = read(f"{header}\nA,{','.join(cells)}\n".encode(), "leads.csv")
    nums = rows[0].call["contact-numbers"]
    assert nums == [f"9198{i:08d}" for i in range(3000)]


# ------------------------------------------------------------------ one identifier, millions of rows
def test_one_identifier_repeated_on_millions_of_rows_is_counted_in_bounded_memory():
    # every digest of the same identifier falls in one of the 256 ranges DigestSpill counts
    # one at a time: 25 M rows of "a" held 200 MB there; 500 M rows (a 2 GB file) 4 GB
    spill = DigestSpill()
    digest = hash("a")
    tracemalloc.start()
    try:
        for _ in range(40):
            spill.add_many([digest] * 50_000)
        spill.add(hash("b"))
        repeated = spill.repeated()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert repeated == {digest}
    assert peak < 4_000_000, peak  # 2 M digests as one array would be 16 MB


def test_digests_repeated_within_and_across_runs_are_all_found():
    spill = DigestSpill()
    twice_in_a_run = list(range(0, 1000, 7))
    across_runs = [10**12 + 1, -(10**12)]
    spill.add_many([*range(1000), *twice_in_a_run, across_runs[0]])
    spill.add_many(range(2000, 2000 + (1 << 16)))  # forces a flush between the two
    spill.add_many([across_runs[1], 5_000_000_000])
    spill.add_many(range(1_000_000, 1_000_000 + (1 << 16)))
    spill.add_many([across_runs[0], across_runs[1]])
    assert spill.repeated() == {*twice_in_a_run, *across_runs}


def test_a_json_lines_identifier_longer_than_the_cell_limit_rejects_its_row_without_keeping_it():
    # JSON Lines values are bounded by the line limit (1 MiB) only: a 500 kB identifier would
    # be stored with its rejected row (DynamoDB items: 400 KB at most)
    big = "X" * 500_000
    data = (json.dumps({"client-identifier": big, "contact-numbers": ["9876543210"]}) + "\n"
            + json.dumps({"client-identifier": "B", "contact-numbers": ["9876543211"]}) + "\n").encode()
    cf, rows = read(data, "calls.jsonl")
    assert isinstance(rows[0], RejectedRow) and rows[0].client_id == ""
    assert rows[0].reason == "client-identifier is longer than the limit of 131,072 bytes (max_cell_bytes)"
    assert isinstance(rows[1], ValidRow)


def test_a_json_call_naming_one_flow_variable_twice_sends_it_once_from_its_first_entry():
    doc = [{"client-identifier": "A", "contact-numbers": ["9876543210"],
            "keys": [{"name": "Name", "value": "Ann"}, {"name": "$flow.key.Name", "value": "Bob"},
                     {"name": "City", "value": "Pune"}]}]
    cf, rows = read(json.dumps(doc).encode(), "calls.json")
    assert rows[0].call["keys"] == [{"name": "$flow.key.Name", "value": "Ann"},
                                    {"name": "$flow.key.City", "value": "Pune"}]
    assert rows[0].warnings == ["keys entry 2 repeats the flow variable $flow.key.Name of entry 1: ignored"]


# ------------------------------------------------------------------ a headerless first line
@pytest.mark.parametrize("line", ["Ravi Kumar,Mumbai,98765-43210 (home)", "Ravi Kumar,+91-98765-43210 ext 2,Pune",
                                  "Ravi Kumar,9876543210 / 9123456780,Pune", "Ravi Kumar,42,Mumbai",
                                  "Ravi Kumar,Pune,mail ravi.k@example.com"])
def test_a_first_line_holding_data_anywhere_in_a_cell_is_not_shown_as_a_header(line):
    reason = reject(f"{line}\nAnita,9123456780,Goa\n".encode(), "leads.csv")
    assert "Ravi" not in reason and "Mumbai" not in reason and "Pune" not in reason, reason
    assert reason.startswith("no header: the first line looks like data")


@pytest.mark.parametrize("line", ['sep="', '"sep=""'])
def test_a_sep_line_naming_the_quote_character_rejects_the_file_with_its_reason(line):
    reason = reject(f'{line}\nclient-identifier"phone\nA"9876543210\n'.encode(), "leads.csv")
    assert reason == "the 'sep=' line names the double quote, which cannot separate columns"
