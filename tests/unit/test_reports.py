"""Reports: the results CSV (formula-safe) and the summary JSON (SPEC.md "Reports")."""

from __future__ import annotations

import csv
import io

import pytest

from phonon_outbound.reports import HEADER, ReportWriter, neutralize, summary_dict


@pytest.mark.parametrize(("cell", "safe"), [
    ("=1+2", "'=1+2"), ("+91 98765", "'+91 98765"), ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("C1", "C1"), ("", ""), ("a=b", "a=b"), ("'quoted", "'quoted"),
])
def test_cells_a_spreadsheet_would_run_as_a_formula_get_a_leading_apostrophe(cell, safe):
    assert neutralize(cell) == safe


def test_the_report_has_exactly_the_spec_columns_and_a_header_even_without_rows():
    buf = io.StringIO(newline="")
    ReportWriter(buf)
    assert buf.getvalue() == "row,client-identifier,status,phonon-uuid,request-id,reason\r\n"
    assert HEADER == ("row", "client-identifier", "status", "phonon-uuid", "request-id", "reason")


def test_rows_are_written_in_order_quoted_as_needed_and_neutralised():
    buf = io.StringIO(newline="")
    w = ReportWriter(buf)
    w.write(1, "C1", "ACCEPTED", "501c78ee-1", "c46e46f4", "")
    w.write(2, "=HYPERLINK(\"x\")", "REJECTED", "", "", "contact number '12345' in tel2 is not valid; x, y")
    w.write_many([(3, "C3", "FAILED", "", "", "-retries exhausted\nline 2")])
    rows = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert rows == [list(HEADER),
                    ["1", "C1", "ACCEPTED", "501c78ee-1", "c46e46f4", ""],
                    ["2", "'=HYPERLINK(\"x\")", "REJECTED", "", "", "contact number '12345' in tel2 is not valid; x, y"],
                    ["3", "C3", "FAILED", "", "", "'-retries exhausted\nline 2"]]
    assert w.rows == 3


def test_summary_counts_statuses_and_carries_flow_requests_timings_and_notes():
    s = summary_dict(file="incoming/x/a.csv", flow="wruHzoCK",
                     counts={"ACCEPTED": 5, "REJECTED": 2, "duplicate": 1},
                     api_requests=3, timings={"ingest_s": 1.23456, "elapsed_s": 9.8765},
                     notes=["not valid UTF-8: read as Windows-1252"], report="s3://b/reports/a.csv.results.csv",
                     job="J1")
    assert s == {"file": "incoming/x/a.csv", "flow": "wruHzoCK", "rows": 8, "accepted": 5, "rejected": 2,
                 "duplicate": 1, "failed": 0, "cancelled": 0, "suppressed": 0, "api_requests": 3, "elapsed_s": 9.877,
                 "timings": {"ingest_s": 1.235, "elapsed_s": 9.877},
                 "notes": ["not valid UTF-8: read as Windows-1252"], "report": "s3://b/reports/a.csv.results.csv",
                 "job": "J1"}


def test_a_whole_file_rejection_has_an_error_and_zero_counts():
    s = summary_dict(file="a.csv", flow=None, counts={"ACCEPTED": 5, "rows": 5}, api_requests=2, error="empty file")
    assert s["error"] == "empty file" and s["flow"] == ""
    assert [s[k] for k in ("rows", "accepted", "rejected", "duplicate", "failed", "api_requests")] == [0] * 6


def test_rows_can_be_given_explicitly():
    assert summary_dict(file="a", flow="f", counts={"rows": 10, "accepted": 4})["rows"] == 10
