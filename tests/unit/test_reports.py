"""Reports: the results CSV (formula-safe) and the summary JSON (README.md, "Reports")."""

from __future__ import annotations

import csv
import io

import pytest

from phonon_outbound.reports import HEADER, ReportWriter, neutralize, outcome_cells, summary_dict


@pytest.mark.parametrize(("cell", "safe"), [
    ("=1+2", "'=1+2"), ("+91 98765", "'+91 98765"), ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("C1", "C1"), ("", ""), ("a=b", "a=b"), ("'quoted", "'quoted"),
    ("x;=1+1", "x;'=1+1"), ("=a;-b", "'=a;'-b"), ("a; -b", "a; -b"), ("a;b", "a;b"),
])
def test_cells_a_spreadsheet_would_run_as_a_formula_get_a_leading_apostrophe(cell, safe):
    assert neutralize(cell) == safe


@pytest.mark.parametrize(("cell", "safe"), [
    # full-width signs (an IME's input; Excel and LibreOffice read ＝1+1 as a formula), DDE's
    # pipe (=cmd|' /C calc'!A0 written as |cmd), a percent sign (LibreOffice's percent formulas
    # and %0A-style smuggling), and a formula behind leading spaces or a line break
    ("＝1+1", "'＝1+1"), ("＋91", "'＋91"), ("－5", "'－5"), ("＠SUM(A1)", "'＠SUM(A1)"),
    ("|cmd", "'|cmd"), ("%0A=1", "'%0A=1"), (" =1+2", "' =1+2"), ("\n=1+2", "'\n=1+2"),
    ("x;＝1+1", "x;'＝1+1"), ("x;|cmd", "x;'|cmd"), ("a|b", "a|b"), ("50%", "50%"),
])
def test_other_ways_to_start_a_formula_are_neutralised_too(cell, safe):
    assert neutralize(cell) == safe


def test_the_report_has_the_spec_columns_first_then_the_outcome_columns_and_a_header_even_without_rows():
    buf = io.StringIO(newline="")
    ReportWriter(buf)
    assert buf.getvalue() == ("row,client-identifier,status,phonon-uuid,request-id,reason,"
                              "outcome,answered,duration_s,attempts,hangup_cause,dtmf,ended_at,delivery\r\n")
    assert HEADER[:6] == ("row", "client-identifier", "status", "phonon-uuid", "request-id", "reason")


def test_rows_are_written_in_order_quoted_and_neutralised():
    buf = io.StringIO(newline="")
    w = ReportWriter(buf)
    w.write(1, "C1", "ACCEPTED", "501c78ee-1", "c46e46f4", "")
    w.write(2, "=HYPERLINK(\"x\")", "REJECTED", "", "", "contact number '12345' in tel2 is not valid; x, y")
    w.write_many([(3, "C3", "FAILED", "", "", "-retries exhausted\nline 2")])
    rows = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    blank = [""] * 8
    assert rows == [list(HEADER),
                    ["1", "C1", "ACCEPTED", "501c78ee-1", "c46e46f4", "", *blank],
                    ["2", "'=HYPERLINK(\"x\")", "REJECTED", "", "", "contact number '12345' in tel2 is not valid; x, y",
                     *blank],
                    ["3", "C3", "FAILED", "", "", "'-retries exhausted\nline 2", *blank]]
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


def _excel_semicolon_split(line: str) -> list[str]:
    """How a spreadsheet in a `;` locale splits a line: on `;` outside double quotes (each `"`
    opens or closes quoting; `""` inside quotes is one quote)."""
    cells, cell, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            continue
        if ch == ";" and not quoted:
            cells.append(cell)
            cell = ""
            continue
        cell += ch
    return [*cells, cell]


def test_every_cell_of_a_data_line_is_quoted_so_a_semicolon_locale_cannot_split_out_a_formula():
    buf = io.StringIO(newline="")
    w = ReportWriter(buf)
    w.write(7, "x;=1+1", "REJECTED", "", "", 'say "hi";@SUM(A1)')
    header, line = buf.getvalue().split("\r\n")[:2]
    assert header == ",".join(HEADER)
    assert line == '"7","x;\'=1+1","REJECTED","","","say ""hi"";\'@SUM(A1)"' + ',""' * 8
    # A `;`-locale spreadsheet reads the whole line as one text cell: no `;` is outside quotes
    assert len(_excel_semicolon_split(line)) == 1
    # and a reader that does not honour quotes after the first still finds no cell it would run
    for cells in (line.split(";"), next(csv.reader(io.StringIO(line), delimiter=";"))):
        assert len(cells) == 3 and not any(c.lstrip('"').startswith(("=", "+", "-", "@")) for c in cells)
    # a comma reader gets the cells back as written
    assert next(csv.reader(io.StringIO(line))) == ["7", "x;'=1+1", "REJECTED", "", "", 'say "hi";\'@SUM(A1)',
                                                   *[""] * 8]


def test_before_quoting_the_semicolon_cell_split_into_a_formula():
    """What the defence is against: the line as it was written before (minimal quoting)."""
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerow((7, "x;=1+1", "REJECTED", "", "", ""))
    assert _excel_semicolon_split(buf.getvalue().strip()) == ["7,x", "=1+1,REJECTED,,,"]


def test_outcome_cells_pending_for_an_accepted_row_without_outcome_empty_for_other_statuses():
    assert outcome_cells("ACCEPTED", {"row": 1}) == ("PENDING",)
    assert outcome_cells("FAILED", {"row": 1}) == ()
    cells = outcome_cells("ACCEPTED", {"outcome": "ANSWERED", "outcome_at": 5, "duration": 43, "attempts": 2,
                                       "hangup_cause": "NORMAL_CLEARING", "dtmf": "19", "ended_at": "t"})
    assert cells == ("ANSWERED", "yes", "43", "2", "NORMAL_CLEARING", "19", "t", "")
    assert outcome_cells("ACCEPTED", {"outcome": "NO_ANSWER", "outcome_at": 5})[:2] == ("NO_ANSWER", "no")
    buf = io.StringIO(newline="")
    ReportWriter(buf).write(1, "C1", "ACCEPTED", "u", "r", "", ("=cmd|x",))  # outcome cells are neutralised too
    assert list(csv.reader(io.StringIO(buf.getvalue(), newline="")))[1][6] == "'=cmd|x"


def test_one_outcome_table_gives_the_answered_cell_the_metric_and_the_mix_group():
    from phonon_outbound.reports import OUTCOME_METRICS, outcome_cells, outcome_group
    from phonon_outbound.webhook import OUTCOME_METRICS as webhook_metrics
    from phonon_outbound_dev.job_status import MIX_ORDER, outcome_mix

    def cells(outcome):
        return outcome_cells("ACCEPTED", {"outcome": outcome, "outcome_at": 1})[:2]

    assert [cells(o) for o in ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "NOT_DELIVERED", "DELIVERED", "COMPLETED")] == [
        ("ANSWERED", "yes"), ("NO_ANSWER", "no"), ("BUSY", "no"), ("FAILED", "no"), ("NOT_DELIVERED", ""),
        ("DELIVERED", ""), ("COMPLETED", "")]
    assert webhook_metrics is OUTCOME_METRICS
    assert OUTCOME_METRICS["COMPLETED"] == "OutcomeCompleted" and outcome_group("COMPLETED") == "other"
    assert OUTCOME_METRICS["BUSY"] == "OutcomeNoAnswer" and OUTCOME_METRICS["NOT_DELIVERED"] == "OutcomeFailed"
    rows = [{"status": "ACCEPTED", "outcome": o, "outcome_at": 1} for o in ("ANSWERED", "COMPLETED", "BUSY", "ODD")]
    assert outcome_mix(rows)["groups"] == {"answered": 1, "no answer": 1, "failed": 0, "delivered": 0, "other": 2,
                                           "waiting": 0}
    assert MIX_ORDER == ("answered", "no answer", "failed", "delivered", "other", "waiting")
