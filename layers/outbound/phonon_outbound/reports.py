"""The per-file results report (CSV) and summary (JSON) (README.md, "Reports").

``reports/<input key>.results.csv``: UTF-8, the six SPEC columns
``row,client-identifier,status,phonon-uuid,request-id,reason`` first and unchanged, then the
call's outcome from the flow-end webhook (``OUTCOME_HEADER``:
``outcome,answered,duration_s,attempts,hangup_cause,dtmf,ended_at,delivery``), one line per data
row in input order. An ACCEPTED row whose outcome has not arrived yet says ``PENDING``; rows of
other statuses leave the outcome columns empty (docs/contract.md, "Reports"). Two defences against a spreadsheet running a cell (OWASP "CSV Injection"):

- every cell of a data line is quoted (``csv.QUOTE_ALL``). A spreadsheet whose locale
  separates fields with ``;`` (most of Europe) splits an unquoted line on ``;`` too, so an
  unquoted ``x;=1+1`` would become the cells ``x`` and ``=1+1`` and run the formula; quoted,
  it stays the one text cell ``x;=1+1``;
- a cell starting with ``=`` ``+`` ``-`` ``@``, a tab or a carriage return (also their
  full-width forms ``＝`` ``＋`` ``－`` ``＠``, ``|`` and ``%``, and any of them behind leading
  spaces or line breaks) gets a leading apostrophe, which spreadsheets show as text and do not evaluate; so does such a character
  right after a ``;`` inside a cell (``x;=1+1`` → ``x;'=1+1``), for readers that split on
  ``;`` without honouring the quotes.

The header line is written as the plain column names: they are fixed text, never data, and
readers match the line as documented.

``reports/<input key>.summary.json``: built by :func:`summary_dict`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any

from .status import STATUSES

__all__ = ["GROUP_METRICS", "HEADER", "OUTCOME_GROUPS", "OUTCOME_HEADER", "OUTCOME_METRICS", "PENDING", "SPEC_HEADER",
           "STATUSES", "ReportWriter", "neutralize", "outcome_cells", "outcome_group", "summary_dict"]

SPEC_HEADER = ("row", "client-identifier", "status", "phonon-uuid", "request-id", "reason")
OUTCOME_HEADER = ("outcome", "answered", "duration_s", "attempts", "hangup_cause", "dtmf", "ended_at", "delivery")
HEADER = SPEC_HEADER + OUTCOME_HEADER

# A call's outcome (the `outcome` column; docs/contract.md, "Outcomes") -> (its group, its
# `answered` cell). The one table the report's `answered` column, the webhook's Outcome* metric
# (`OUTCOME_METRICS`) and `status`'s outcome mix (phonon_outbound_dev.job_status) are read from.
# An outcome not named here is "other".
OUTCOME_GROUPS: dict[str, tuple[str, str]] = {
    "ANSWERED": ("answered", "yes"),
    "NO_ANSWER": ("no answer", "no"), "BUSY": ("no answer", "no"),
    "FAILED": ("failed", "no"), "NOT_DELIVERED": ("failed", ""),  # a message, not a call: no `answered`
    "DELIVERED": ("delivered", ""),
    "COMPLETED": ("other", ""),  # the push said nothing more
}
# The groups in the order they are shown, each with its metric.
GROUP_METRICS = {"answered": "OutcomeAnswered", "no answer": "OutcomeNoAnswer", "failed": "OutcomeFailed",
                 "delivered": "OutcomeDelivered", "other": "OutcomeCompleted"}
OUTCOME_METRICS = {outcome: GROUP_METRICS[group] for outcome, (group, _) in OUTCOME_GROUPS.items()}


def outcome_group(outcome: str) -> str:
    """The outcome's group in `OUTCOME_GROUPS` ("other" for an outcome not named there)."""
    return OUTCOME_GROUPS.get(str(outcome or "").upper(), ("other", ""))[0]
PENDING = "PENDING"  # an ACCEPTED row whose flow-end outcome has not arrived (yet)
# OWASP's list (= + - @ tab CR), their full-width forms (an IME types ＝; Excel and LibreOffice
# take it for =), '|' (DDE: =cmd|' /C calc'!A0) and '%' (LibreOffice's percent formulas; "%0A"
# smuggling). Leading spaces and line breaks are looked through: " =1+2" may be trimmed and run.
_FORMULA_CHARS = "=+-@\t\r\uff1d\uff0b\uff0d\uff20|%"
_FORMULA_START = tuple(_FORMULA_CHARS)
_LEADING_BLANKS = " \n\u00a0\u3000"
_AFTER_SEMICOLON = re.compile(r";(?=[" + re.escape(_FORMULA_CHARS) + "])")


def neutralize(cell: str) -> str:
    """``'=1+2'`` -> ``"'=1+2"``, ``'x;=1'`` -> ``"x;'=1"``; everything else unchanged."""
    if not cell:
        return cell
    if ";" in cell:
        cell = _AFTER_SEMICOLON.sub(";'", cell)
    if cell.lstrip(_LEADING_BLANKS).startswith(_FORMULA_START):
        return "'" + cell
    return cell


class ReportWriter:
    """Writes the results CSV to a text file object opened with ``newline=""`` (UTF-8).

    The header line is written at construction, so a whole-file rejection still leaves a
    report with its header only (README.md, "Reports"). Lines end in CRLF (RFC 4180; what Excel expects).
    """

    def __init__(self, fileobj_text: IO[str]) -> None:
        csv.writer(fileobj_text, lineterminator="\r\n").writerow(HEADER)
        self._w = csv.writer(fileobj_text, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        self.rows = 0

    def write(self, row: int, client_id: str, status: str, phonon_uuid: str = "", request_id: str = "",
              reason: str = "", outcome: tuple[str, ...] = ()) -> None:
        """One data line; `outcome`: the `outcome_cells` of the row (empty: no outcome columns' values)."""
        cells = tuple(neutralize(c) for c in outcome) + ("",) * (len(OUTCOME_HEADER) - len(outcome))
        self._w.writerow((row, neutralize(client_id or ""), status, neutralize(phonon_uuid or ""),
                          neutralize(request_id or ""), neutralize(reason or ""), *cells))
        self.rows += 1

    def write_many(self, rows: Iterable[tuple[int, str, str, str, str, str]]) -> None:
        for r in rows:
            self.write(*r)


def outcome_cells(status: str, item: Mapping[str, Any]) -> tuple[str, ...]:
    """The outcome columns of a row: its stored outcome (store.rows OUTCOME_ATTRS) when known,
    ``PENDING`` for an ACCEPTED row still without one, nothing for other statuses (even when a
    push came for one: `placed_anyway` says so in its reason instead)."""
    if status != "ACCEPTED":
        return ()
    if not item.get("outcome_at") or not item.get("outcome"):
        return (PENDING,)
    outcome = str(item["outcome"])
    answered = OUTCOME_GROUPS.get(outcome, ("other", ""))[1]

    def text(name: str) -> str:
        value = item.get(name)
        return "" if value is None else str(value)

    return (outcome, answered, text("duration"), text("attempts"), text("hangup_cause"), text("dtmf"),
            text("ended_at"), text("delivery"))


def placed_anyway(status: str, item: Mapping[str, Any], reason: str) -> str:
    """A row's reason, plus a note when Phonon's flow-end push came for a row that did not end
    ACCEPTED (e.g. FAILED after time-outs, where Phonon had placed the call): the outcome
    columns stay empty for such a row (docs/contract.md), and the person reading the report
    still learns that the call was made."""
    if status == "ACCEPTED" or not item.get("outcome_at") or not item.get("outcome"):
        return reason
    note = f"Phonon placed this call anyway: its flow-end webhook says {item['outcome']}"
    return f"{reason}; {note}" if reason else note


def summary_dict(*, file: str, flow: str | None, counts: Mapping[str, int] | None = None,
                 api_requests: int = 0, timings: Mapping[str, float] | None = None,
                 notes: Iterable[str] = (), report: str | None = None, error: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The summary JSON object.

    ``counts`` maps statuses (``ACCEPTED``… or ``accepted``…) to numbers; ``rows`` is their
    sum unless given. A whole-file rejection passes ``error``: the counts are then all zero.
    ``timings`` are seconds (e.g. ``{"ingest_s": 1.2, "elapsed_s": 9.8}``);
    ``elapsed_s`` is also copied to the top level, where the command line's ``--json`` has it.
    Extra keyword arguments are added as they are (e.g. ``job=…``, ``bucket=…``).
    """
    lower = {k.lower(): int(v) for k, v in (counts or {}).items()}
    out: dict[str, Any] = {"file": file, "flow": flow or ""}
    if error is not None:
        lower = {}
    per_status = {s.lower(): lower.get(s.lower(), 0) for s in STATUSES}
    out["rows"] = lower.get("rows", sum(per_status.values()))
    out.update(per_status)
    out["api_requests"] = 0 if error is not None else int(api_requests)
    timings = {k: round(float(v), 3) for k, v in (timings or {}).items()}
    if "elapsed_s" in timings:
        out["elapsed_s"] = timings["elapsed_s"]
    out["timings"] = timings
    out["notes"] = list(notes)
    if report is not None:
        out["report"] = report
    if error is not None:
        out["error"] = error
    out.update(extra)
    return out
