"""Property tests: whatever the bytes, the reader never crashes, and every data row ends in exactly
one status (one ValidRow or RejectedRow per row, numbered 1..N), N counted independently here."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts

OPTS = ParseOptions(now=datetime(2026, 6, 1, 6, 0, tzinfo=UTC))
SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(data: bytes, name: str):
    """(rows, row_count) or None for a whole-file rejection; any other exception fails the test."""
    try:
        cf = open_contacts(io.BytesIO(data), name, OPTS)
    except FileRejected as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return None
    rows = list(cf.rows())
    return rows, cf.row_count


def check_rows(rows, row_count: int) -> None:
    assert [r.row for r in rows] == list(range(1, row_count + 1))
    for r in rows:
        assert isinstance(r, (ValidRow, RejectedRow))
        if isinstance(r, ValidRow):
            call = r.call
            assert call["client-identifier"] == r.client_id and r.client_id
            assert call["contact-numbers"] and all(n.isdigit() for n in call["contact-numbers"])
            assert len(set(call["contact-numbers"])) == len(call["contact-numbers"])
            assert all(k["name"].startswith("$flow.key.") and k["value"] for k in call["keys"])
            assert list(call)[-2:] == ["contact-numbers", "keys"]
            json.dumps(call)  # serialisable as it is
        else:
            assert r.reason


NAMES = st.sampled_from(["f.csv", "f.tsv", "f.txt", "f.json", "f.jsonl", "f.ndjson", "f.csv.gz", "f.json.gz",
                         "f.jsonl.gz", "f", "f.CSV"])


@SETTINGS
@given(data=st.binary(max_size=600), name=NAMES)
def test_random_bytes_never_crash(data, name):
    result = read_all(data, name)
    if result is not None:
        check_rows(*result)


@SETTINGS
@given(data=st.binary(max_size=400), name=NAMES)
def test_random_bytes_after_a_valid_header_never_crash(data, name):
    result = read_all(b"client-identifier,phone,start-time,x\n" + data, "f.csv")
    if result is not None:
        check_rows(*result)


# -- CSV shapes ----------------------------------------------------------------------------

CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "9876543210", "+91 98765 43210", "919876543210", "12345", "9.18E+11",
                     "9876543210;9876543211", "a|b", "2026-06-29 09:30", "2026-06-29", "29/06/2026 10:00",
                     "2026-01-01T10:00:00Z", "=1+2", "C1", "C2", 'x"y', "a,b;c\td", "line\nbreak", "\r\n"]),
)
HEADER_EXTRA = st.lists(st.sampled_from(["client-identifier", "Name", "start-time", "tel2", "OutboundRef",
                                         "$flow.key.X", "", "contact_number_3", "City"]), max_size=4)


@SETTINGS
@given(extra=HEADER_EXTRA, records=st.lists(st.lists(CELL, max_size=7), max_size=25),
       delimiter=st.sampled_from([",", ";", "\t"]), sep_line=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]), gz=st.booleans(),
       crlf=st.booleans())
def test_random_csv_gives_one_status_per_data_row(extra, records, delimiter, sep_line, encoding, gz, crlf):
    # Given a CSV written by Python's csv module: a phone column, random others, random records
    header = ["phone", *extra]
    buf = io.StringIO(newline="")
    if sep_line:
        buf.write(f"sep={delimiter}\r\n" if crlf else f"sep={delimiter}\n")
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    for rec in records:
        w.writerow(rec)
    text = buf.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    # Without a sep= line and with a one-column header the delimiter cannot be sniffed: use ','
    if not sep_line and delimiter != "," and len(header) == 1:
        assume(False)
    if gz:
        data = gzip.compress(data)
    # When it is read
    result = read_all(data, "f.csv.gz" if gz else "f.csv")
    # Then (its header names a phone column, so) it is never rejected whole ...
    assert result is not None
    rows, row_count = result
    # ... and there is one status per record that is not blank, counted here independently
    expected = sum(1 for rec in records if any(c.strip() for c in rec))
    assert row_count == expected
    check_rows(rows, row_count)


@SETTINGS
@given(cells=st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_random_field_values_in_every_role_never_crash(cells):
    header = ["client-identifier", "phone", "tel2", "start-time", "OutboundRef", "Var"][: len(cells)]
    if "phone" not in header:
        header.append("phone")
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerow(cells)
    result = read_all(buf.getvalue().encode("utf-8"), "f.csv")
    assert result is not None
    rows, row_count = result
    assert row_count == (1 if any(c.strip() for c in cells) else 0)
    check_rows(rows, row_count)


# -- JSON shapes -----------------------------------------------------------------------------

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=15), st.sampled_from(["9876543210", "+919876543211", "2026-06-29 09:30"]))
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=8)
CALL = st.fixed_dictionaries({}, optional={
    "client-identifier": st.one_of(st.sampled_from(["a", "b", "c", ""]), SCALAR),
    "contact-numbers": st.one_of(JSON_VALUE, st.sampled_from(["9876543210", 9876543210, ["9876543210", "1"]])),
    "start-time": st.one_of(SCALAR, st.sampled_from(["2026-06-29T09:30:00+05:30", "2020-01-01 10:00"])),
    "keys": st.one_of(JSON_VALUE, st.lists(st.fixed_dictionaries({"name": st.text(max_size=8),
                                                                   "value": SCALAR}), max_size=3)),
})
ELEMENT = st.one_of(CALL, JSON_VALUE)


@SETTINGS
@given(elements=st.lists(ELEMENT, max_size=12), wrap=st.booleans(), flow=st.one_of(st.none(), st.text(max_size=9)),
       gz=st.booleans())
def test_random_json_gives_one_status_per_element(elements, wrap, flow, gz):
    doc = {"flow-id": flow, "calls": elements} if wrap else elements
    data = json.dumps(doc).encode()
    if gz:
        data = gzip.compress(data)
    result = read_all(data, "f.json.gz" if gz else "f.json")
    assert result is not None
    rows, row_count = result
    assert row_count == len(elements)
    check_rows(rows, row_count)


@SETTINGS
@given(lines=st.lists(st.one_of(ELEMENT.map(json.dumps), st.text(max_size=20), st.just(""), st.just("  ")),
                      max_size=15))
def test_random_json_lines_give_one_status_per_non_blank_line(lines):
    text = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
    result = read_all(text.encode("utf-8", "surrogatepass"), "f.jsonl")
    if result is None:  # only a whole-file reason: nothing but blanks, or binary-looking text
        return
    rows, row_count = result
    expected = sum(1 for line in text.split("\n") if line.strip())
    assert row_count == expected
    check_rows(rows, row_count)
