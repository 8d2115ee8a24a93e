"""Resource caps on a contact file (issue 10 #4), with small caps: the decompressed size, the
header's length and number of columns reject the whole file; a longer line or cell rejects
that row and the other rows go on. ``tests/bench/hostile_bench.py`` measures the real sizes."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
SMALL = ParseOptions(now=NOW, max_line_bytes=1024, max_columns=10, max_cell_bytes=100,
                     max_decompressed_bytes=50_000)


def read(data: bytes | str, name: str = "leads.csv", opts: ParseOptions = SMALL):
    if isinstance(data, str):
        data = data.encode("utf-8")
    cf = open_contacts(io.BytesIO(data), name, opts)
    return cf, list(cf.rows())


def reject(data: bytes | str, name: str = "leads.csv", opts: ParseOptions = SMALL) -> str:
    with pytest.raises(FileRejected) as exc:
        read(data, name, opts)
    return exc.value.reason


def test_a_gzip_that_decompresses_past_the_limit_is_rejected():
    bomb = gzip.compress(b"client-identifier,phone\n" + b"C1,9876543210\n" * 10_000)  # 140 kB from ~1 kB
    assert reject(bomb, "leads.csv.gz") == ("decompressed size over the limit of 50,000 bytes "
                                            "(max_decompressed_bytes)")
    cf, rows = read(gzip.compress(b"client-identifier,phone\nC1,9876543210\n"), "leads.csv.gz")
    assert isinstance(rows[0], ValidRow)


def test_a_header_longer_than_the_line_limit_rejects_the_file():
    assert reject("phone," + "x" * 2000 + "\nC1,9876543210\n") == (
        "no header: the first line is longer than the limit of 1,024 bytes (max_line_bytes)")


def test_a_header_with_more_columns_than_the_limit_rejects_the_file():
    assert reject("client-identifier,phone" + ",x" * 9 + "\nC1,9876543210\n") == (
        "the header has 11 columns, more than the limit of 10 (max_columns)")


def test_a_line_longer_than_the_limit_rejects_that_row_and_the_rest_go_on():
    data = "client-identifier,phone,note\nC1,9876543210,a\nC2,9876543211," + "0" * 5000 + "\nC3,9876543212,c\n"
    cf, rows = read(data)
    assert cf.row_count == len(rows) == 3
    assert rows[1] == RejectedRow(2, "", "line is longer than the limit of 1,024 bytes (max_line_bytes): not read")
    assert [r.client_id for r in rows if isinstance(r, ValidRow)] == ["C1", "C3"]


def test_a_quoted_value_whose_lines_together_pass_the_limit_is_one_rejected_row():
    data = "client-identifier,phone,note\nC1,9876543210,a\nC2,9876543211,\"" + "abc\n" * 400 + "\"\n"
    cf, rows = read(data)
    assert cf.row_count == len(rows)
    assert isinstance(rows[0], ValidRow)
    assert rows[1].reason == ("a quoted value runs over lines for more than 100 bytes (max_cell_bytes), or its "
                              "closing quote is missing: row not read; the lines after it are read as rows again")


def test_a_quote_that_is_never_closed_costs_one_row_and_the_rows_after_it_are_read():
    opts = ParseOptions(now=NOW, max_cell_bytes=100)
    good = "".join(f"C{i},98765432{i:02d},x\n" for i in range(10, 60))
    data = "client-identifier,phone,note\nC1,9876543210,\"never closed\n" + good
    cf, rows = read(data, opts=opts)
    assert cf.row_count == len(rows)
    assert rows[0].reason.startswith("a quoted value runs over lines")
    accepted = [r.client_id for r in rows if isinstance(r, ValidRow)]
    assert len(accepted) >= 40 and accepted[-1] == "C59"  # at most ~100 bytes of rows went into the bad one


def test_a_cell_longer_than_the_limit_rejects_that_row_naming_the_column_not_the_value():
    data = "client-identifier,phone,note\nC1,9876543210," + "y" * 150 + "\nC2,9876543211,ok\n"
    cf, rows = read(data)
    assert rows[0] == RejectedRow(1, "C1", "'note' has a value longer than the limit of 100 bytes "
                                           "(max_cell_bytes): row not read")
    assert isinstance(rows[1], ValidRow)


def test_json_lines_a_long_line_is_a_rejected_row():
    line = json.dumps({"client-identifier": "b", "phone": "9876543211", "keys": {"x": "z" * 3000}})
    data = f'{{"client-identifier": "a", "phone": "9876543210"}}\n{line}\n{{"client-identifier": "c", "phone": "9876543212"}}\n'
    cf, rows = read(data, "calls.jsonl")
    assert cf.row_count == 3
    assert rows[1].reason.startswith("line is longer than the limit of 1,024 bytes")
    assert isinstance(rows[0], ValidRow) and isinstance(rows[2], ValidRow)


@pytest.mark.parametrize("value", ["z" * 500, '\\"' * 300, "1" * 500])
def test_a_json_value_longer_than_the_cell_limit_rejects_the_file(value):
    quoted = f'"{value}"' if not value.isdigit() else value
    data = '[{"client-identifier": "a", "contact-numbers": "9876543210", "keys": {"x": ' + quoted + '}}]'
    assert reject(data, "calls.json") == "a JSON value is longer than the limit of 100 bytes (max_cell_bytes)"


def test_json_under_the_limits_is_read():
    data = '[{"client-identifier": "a\\\\", "contact-numbers": "9876543210", "keys": {"x": "' + "q" * 90 + '"}}]'
    _, rows = read(data, "calls.json")
    assert isinstance(rows[0], ValidRow) and rows[0].client_id == "a\\"


def test_a_long_line_is_never_held_in_memory():
    # 20 MB on one line: the reader holds at most about the cap (1 MiB by default) of it
    data = b"client-identifier,phone,note\nC1,9876543210," + b"0" * 20_000_000 + b"\nC2,9876543211,x\n"
    tracemalloc.start()
    try:
        cf = open_contacts(io.BytesIO(data), "big.csv", ParseOptions(now=NOW))
        rows = list(cf.rows())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [type(r) for r in rows] == [RejectedRow, ValidRow]
    assert peak < 12_000_000, peak
