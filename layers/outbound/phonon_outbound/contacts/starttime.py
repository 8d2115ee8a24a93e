"""start-time cells: docs/contact-files.md "Start time".

Accepted:
- ISO-8601 with an offset: ``2026-06-29T09:30:00+05:30``, ``+0530``, ``+05``, ``Z``; seconds
  optional; fractional seconds dropped; a space instead of ``T`` is tolerated.
- ``YYYY-MM-DD HH:MM[:SS]`` or ``YYYY-MM-DDTHH:MM[:SS]`` without offset: read in the
  configured time zone (default ``Asia/Kolkata``).

Sent as ``YYYY-MM-DDTHH:MM:SS±HH:MM``, keeping the given offset (``Z`` becomes ``+00:00``).
A date before today *in that offset* is rejected; a past time today is accepted (Phonon runs
it at once). Date-only values, day-first or month-first dates and anything else are
rejected with a reason that shows the format to use.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["StartTimeParser"]

_ISO = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ]\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?"
)
_NOT_YEAR_FIRST = re.compile(r"(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4}|\d{2})(?!\d)(?:[Tt ,]+\s*(\d{1,2}:\d{2}(?::\d{2})?))?.*")
_SERIAL = re.compile(r"\d{5}(?:\.\d+)?")

_CACHE_MAX = 4_096


class StartTimeParser:
    """``parse(cell) -> (value, None) | (None, reason)``; ``cell`` is stripped and non-empty."""

    def __init__(self, time_zone: str = "Asia/Kolkata", now: datetime | None = None) -> None:
        self.zone = ZoneInfo(time_zone)
        self.zone_name = time_zone
        now = now if now is not None else datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self._now_utc = now.astimezone(UTC).replace(tzinfo=None)
        self._today: dict[int, date] = {}  # offset in minutes -> today's date there
        self._cache: dict[str, tuple[str | None, str | None]] = {}
        example_day = (now.astimezone(self.zone) + timedelta(days=1)).date().isoformat()
        self._example = f"{example_day} 09:30"
        self._howto = (f"write it as YYYY-MM-DD HH:MM[:SS] (e.g. {self._example}, read in {time_zone}) "
                       f"or ISO-8601 with an offset (e.g. {example_day}T09:30:00+05:30)")

    def parse(self, cell: str) -> tuple[str | None, str | None]:
        hit = self._cache.get(cell)
        if hit is None:
            hit = self._parse(cell)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[cell] = hit
        return hit

    def _today_at(self, offset_min: int) -> date:
        today = self._today.get(offset_min)
        if today is None:
            today = self._today[offset_min] = (self._now_utc + timedelta(minutes=offset_min)).date()
        return today

    def _parse(self, cell: str) -> tuple[str | None, str | None]:
        m = _ISO.fullmatch(cell)
        if m is None:
            return None, self._explain(cell)
        y, mo, d, hh, mi, ss, zulu, sign, oh, om = m.groups()
        if hh is None:
            return None, f"start-time '{cell}' has a date but no time; {self._howto}"
        try:
            naive = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0))
        except ValueError:
            return None, f"start-time '{cell}' is not a real date and time; {self._howto}"
        if zulu:
            offset_min = 0
        elif sign:
            oh_i, om_i = int(oh), int(om or 0)
            if oh_i > 14 or om_i > 59:
                return None, f"start-time '{cell}' has an impossible UTC offset; {self._howto}"
            offset_min = (oh_i * 60 + om_i) * (-1 if sign == "-" else 1)
        else:
            utcoff = naive.replace(tzinfo=self.zone).utcoffset()
            assert utcoff is not None
            offset_min = int(utcoff.total_seconds() // 60)
        today = self._today_at(offset_min)
        if naive.date() < today:
            return None, (f"start-time '{cell}' is in the past: {naive.date().isoformat()} is before today "
                          f"({today.isoformat()} at UTC{_fmt_offset(offset_min)})")
        return naive.strftime("%Y-%m-%dT%H:%M:%S") + _fmt_offset(offset_min), None

    def _explain(self, cell: str) -> str:
        m = _NOT_YEAR_FIRST.fullmatch(cell)
        if m is not None:
            a, b, year, clock = m.groups()
            if len(year) == 2:
                year = "20" + year
            if int(a) > 12 >= int(b):  # unambiguous: day first
                suggestion = f"{year}-{int(b):02d}-{int(a):02d} {clock or 'HH:MM'}"
                return (f"start-time {_shown(cell)} is day-first; write it year-first with a time, as "
                        f"YYYY-MM-DD HH:MM[:SS]: here {suggestion}")
            return (f"start-time {_shown(cell)} is not year-first (day-first or month-first dates are "
                    f"ambiguous); {self._howto}")
        if _SERIAL.fullmatch(cell):
            return (f"start-time '{cell}' is a spreadsheet date serial number; format the column as "
                    f"text, or {self._howto}")
        return f"start-time {_shown(cell)} is not a date and time; {self._howto}"


_DATE_CHARS = re.compile(r"[0-9 ./:+\-TZtz]{1,40}")
_LONG_DIGITS = re.compile(r"\d{6}")


def _shown(cell: str) -> str:
    """The cell quoted when it looks like a date or time; else only its length (a cell that
    is not a date may be anything: a name, a number)."""
    if _DATE_CHARS.fullmatch(cell) and not _LONG_DIGITS.search(cell):
        return f"'{cell}'"
    return f"(a value of {len(cell)} characters)"


def _fmt_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
