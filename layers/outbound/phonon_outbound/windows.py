"""Calling windows: the days and hours at which a call may start, in the recipient's time zone
(docs/calling-windows.md).

- `parse_window(spec)` reads a spec such as ``Mon-Sat 09:00-21:00; except 2026-12-25`` into a
  `CallingWindow` (or raises `WindowError` saying what is wrong and where).
- `CallingWindow.next_allowed(t, zone)` is the first instant at or after `t` at which a call
  may start: inside an opening, not on a blackout date, not in the last `margin` before the
  opening closes. Wall-clock times become instants with `zoneinfo`; a DST gap or overlap at an
  edge is taken the safe way (an opening starts at the later and ends at the earlier reading).
- `rules_for(settings, flow)` is the window that applies to a flow: the flow's own entry in
  `CALLING_WINDOWS` (JSON), else the deployment default (`CALLING_WINDOW` and its companions),
  else none (`None`: windows are off unless set).
- `screen_row` is ingest's one call per row (a start-time outside the window: REJECTED, or
  moved to the next opening under `defer`); `chunk_wait` is dispatch's one check before a chunk
  is sent (the seconds to wait, or None when it may go now); `check_row` serves
  `phonon-outbound check`.

The recipient's zone: each contact number's zone from phonenumbers' time-zone data when
exactly one zone fits the number, else the flow's zone. A call (all its numbers) may start
only when the window is open in every one of its zones; a chunk is one request, so it is sent
only when every row's call may start (the common opening).

Written here rather than taken from a library: no maintained Python package reads a weekly
schedule with blackout dates and answers "next allowed instant in zone Z" with DST-safe edges
(cron-style libraries answer "next match of a pattern", not "inside an interval minus a
margin"); the arithmetic is a few dozen lines on top of `zoneinfo`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:  # dispatch imports this module: the contact reader (and phonenumbers) stays out of it
    from .settings import Settings
    from .store.jobs import JobsRepository

__all__ = ["CallingWindow", "WindowError", "WindowRules", "Wait", "chunk_wait", "check_row", "parse_window",
           "rules_for", "screen_row"]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
POLICIES = ("reject", "defer")
OFF = ("", "off", "none", "always")  # a flow entry with one of these: no window for that flow
SEARCH_DAYS = 400  # how far ahead an opening is looked for (a blackout can cover weeks)
MAX_DELAY_S = 900  # SQS DelaySeconds' ceiling: a longer wait is handed back repeatedly
# Names phonenumbers' data still uses for zones that IANA renamed: shown by their current name.
_RENAMED = {"Asia/Calcutta": "Asia/Kolkata", "Asia/Katmandu": "Asia/Kathmandu", "Asia/Rangoon": "Asia/Yangon",
            "Asia/Saigon": "Asia/Ho_Chi_Minh", "Europe/Kiev": "Europe/Kyiv"}
WAIT_NOTE_EVERY_S = 600.0  # a waiting job's item is refreshed this often (it stays "alive" for the watchdog)


class WindowError(ValueError):
    """A calling-window spec or setting that cannot be used; the message says what and where."""


# ---------------------------------------------------------------------- the spec
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")
_DAYS_WORD = {"daily": range(7), "everyday": range(7), "weekdays": range(5), "weekends": range(5, 7)}


def _day(text: str, part: str) -> int:
    key = text.strip().lower()[:3]
    for i, name in enumerate(DAY_NAMES):
        if name.lower() == key and re.fullmatch(_DAY, text.strip().lower()):
            return i
    raise WindowError(f"'{text.strip()}' in '{part}' is not a day (Mon Tue Wed Thu Fri Sat Sun)")


def _days(text: str, part: str) -> frozenset[int]:
    word = text.strip().lower()
    if word in _DAYS_WORD:
        return frozenset(_DAYS_WORD[word])
    out: set[int] = set()
    for piece in text.split(","):
        first, sep, last = piece.partition("-")
        a = _day(first, part)
        if not sep:
            out.add(a)
            continue
        b = _day(last, part)
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # Fri-Mon wraps over the week's end
    return frozenset(out)


def _clock(text: str, part: str, end: bool) -> int:
    m = _CLOCK.match(text.strip())
    if m is None:
        raise WindowError(f"'{text.strip()}' in '{part}' is not a time of day (HH:MM or HH:MM:SS)")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if end and (h, mi, s) == (24, 0, 0):
        return 86400
    if h > 23 or mi > 59 or s > 59:
        raise WindowError(f"'{text.strip()}' in '{part}' is not a time of day (00:00 to 23:59{', or 24:00' if end else ''})")
    return h * 3600 + mi * 60 + s


def _date(text: str, part: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise WindowError(f"'{text}' in '{part}' is not a real date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class CallingWindow:
    """Allowed start times: per weekday (0 = Monday) a sorted list of [start, end) seconds of the
    local day, blackout dates (local), and the margin before each closing."""

    spec: str
    days: tuple[tuple[tuple[int, int], ...], ...]
    blackouts: frozenset[date] = frozenset()
    margin_s: int = 0

    def with_margin(self, minutes: float) -> CallingWindow:
        return replace(self, margin_s=int(round(minutes * 60)))

    @property
    def label(self) -> str:
        """The spec as shown in reasons (with the margin, when there is one)."""
        extra = f", no call in the last {self.margin_s // 60:g} min" if self.margin_s >= 60 else (
            f", no call in the last {self.margin_s} s" if self.margin_s else "")
        return f"{self.spec}{extra}"

    # -------------------------------------------------------------- openings
    def _local_intervals(self, day: date) -> list[tuple[int, int]]:
        return [] if day in self.blackouts else list(self.days[day.weekday()])

    def openings(self, zone: ZoneInfo, start: date) -> Iterator[tuple[datetime, datetime]]:
        """[open, close − margin) in UTC, from local date `start` on, in order; adjacent pieces
        (e.g. 18:00-24:00 and 00:00-06:00 the next day) are one opening."""
        pending: tuple[datetime, datetime] | None = None
        for n in range(SEARCH_DAYS):
            day = start + timedelta(days=n)
            for a, b in self._local_intervals(day):
                lo, hi = _instant(day, a, zone, first=False), _instant(day, b, zone, first=True)
                if hi <= lo:
                    continue
                if pending is not None and lo <= pending[1]:
                    pending = (pending[0], max(pending[1], hi))
                    continue
                if pending is not None:
                    out = self._trim(pending)
                    if out is not None:
                        yield out
                pending = (lo, hi)
        if pending is not None:
            out = self._trim(pending)
            if out is not None:
                yield out

    def _trim(self, span: tuple[datetime, datetime]) -> tuple[datetime, datetime] | None:
        end = span[1] - timedelta(seconds=self.margin_s)
        return (span[0], end) if end > span[0] else None

    def next_allowed(self, t: datetime, zone: ZoneInfo) -> datetime | None:
        """The first instant ≥ t at which a call may start in `zone` (t itself when allowed);
        None when there is none within SEARCH_DAYS."""
        t = t.astimezone(UTC)
        start = t.astimezone(zone).date() - timedelta(days=1)  # an opening may run over midnight
        for lo, hi in self.openings(zone, start):
            if hi > t:
                return max(lo, t)
        return None

    def allowed(self, t: datetime, zone: ZoneInfo) -> bool:
        return self.next_allowed(t, zone) == t.astimezone(UTC)

    def closes_after(self, t: datetime, zone: ZoneInfo) -> datetime | None:
        """When the opening that allows `t` stops allowing calls (its close minus the margin)."""
        t = t.astimezone(UTC)
        for lo, hi in self.openings(zone, t.astimezone(zone).date() - timedelta(days=1)):
            if lo <= t < hi:
                return hi
            if lo > t:
                return None
        return None


def _instant(day: date, seconds: int, zone: ZoneInfo, first: bool) -> datetime:
    """Local `day` + `seconds` in `zone` as a UTC instant. A wall time that happens twice (DST
    ends) or never (DST starts) has two readings (fold 0 and 1): `first` takes the earlier (for
    a closing), else the later (for an opening), so an opening never grows at a DST edge."""
    naive = datetime.combine(day, datetime.min.time()) + timedelta(seconds=seconds)
    a = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return min(a, b) if first else max(a, b)


@lru_cache(maxsize=64)
def parse_window(spec: str) -> CallingWindow:
    """``Mon-Sat 09:00-21:00; Sun 10:00-14:00; except 2026-12-25, 2026-12-31..2027-01-01``.

    Parts are separated by ``;``. A part is either days and times (days: ``Mon``, ``Mon-Fri``,
    ``Mon,Wed``, ``Fri-Mon``, ``daily``, ``weekdays``, ``weekends``; times: ``HH:MM-HH:MM``, more
    than one separated by ``,``; seconds allowed; ``24:00`` ends a day; an end before the start
    runs over midnight) or ``except`` and blackout dates (``YYYY-MM-DD`` or ``A..B``, separated
    by ``,`` or spaces)."""
    text = " ".join(str(spec).split())
    if not text:
        raise WindowError("the calling window is empty (e.g. 'Mon-Sat 09:00-21:00')")
    per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    blackouts: set[date] = set()
    any_hours = False
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        word, _, rest = part.partition(" ")
        if word.lower() in ("except", "not", "blackout"):
            dates = [d for d in re.split(r"[,\s]+", rest) if d]
            if not dates:
                raise WindowError(f"'{part}' names no date (e.g. 'except 2026-12-25')")
            for d in dates:
                m = _DATE.match(d)
                if m is None:
                    raise WindowError(f"'{d}' in '{part}' is not a date (YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD)")
                first = _date(m.group(1), part)
                last = _date(m.group(2), part) if m.group(2) else first
                if last < first or (last - first).days > 366:
                    raise WindowError(f"'{d}' in '{part}' is not a range of at most a year, first date first")
                blackouts.update(first + timedelta(days=i) for i in range((last - first).days + 1))
            continue
        m = re.match(r"^(\S+)\s+(.+)$", part)
        if m is None:
            raise WindowError(f"'{part}' needs days and hours, e.g. 'Mon-Sat 09:00-21:00'")
        days = _days(m.group(1), part)
        for rng in m.group(2).replace(" ", "").split(","):
            a_text, sep, b_text = rng.partition("-")
            if not sep:
                raise WindowError(f"'{rng}' in '{part}' is not a range of hours (HH:MM-HH:MM)")
            a, b = _clock(a_text, part, end=False), _clock(b_text, part, end=True)
            if a == b:
                raise WindowError(f"'{rng}' in '{part}' is empty: it starts when it ends")
            for d in days:
                if b > a:
                    per_day[d].append((a, b))
                else:  # over midnight: the rest of the day, then the next day's start
                    per_day[d].append((a, 86400))
                    if b:
                        per_day[(d + 1) % 7].append((0, b))
            any_hours = True
    if not any_hours:
        raise WindowError(f"'{text}' names no days and hours (e.g. 'Mon-Sat 09:00-21:00')")
    return CallingWindow(text, tuple(_merge(d) for d in per_day), frozenset(blackouts))


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


# ---------------------------------------------------------------------- zones
@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"'{name}' is not a time zone (an IANA name such as Asia/Kolkata)") from None


@lru_cache(maxsize=65_536)
def number_zone(digits: str) -> str | None:
    """The one zone that fits a number (E.164 digits, no '+'), from phonenumbers' time-zone data;
    None when none or several fit. phonenumbers is imported here, on the first call: dispatch
    needs it only when a window is set, and its handler's import stays light."""
    import phonenumbers  # noqa: PLC0415 - see the docstring
    from phonenumbers import timezone as pn_timezone  # noqa: PLC0415
    from phonenumbers.tzdata import TIMEZONE_DATA  # noqa: PLC0415

    if not digits.isdigit():  # not E.164 digits (a hand-written chunk message): the flow's zone
        return None
    # Fast path: a country with one zone (India) needs no parse of the number (~30 µs): its
    # calling code (1-3 digits; no code is a prefix of another) names the zone.
    for n in (1, 2, 3):
        if int(digits[:n] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            country = TIMEZONE_DATA.get(digits[:n], ())
            if len(country) == 1 and country[0] != pn_timezone.UNKNOWN_TIMEZONE:
                return _known(country[0])
            break
    try:
        zones = pn_timezone.time_zones_for_number(phonenumbers.parse("+" + digits))
    except phonenumbers.NumberParseException:
        return None
    if len(zones) != 1 or zones[0] == pn_timezone.UNKNOWN_TIMEZONE:
        return None
    return _known(zones[0])


def _known(name: str) -> str | None:
    """phonenumbers' zone name as zoneinfo knows it (its current name), None when unknown."""
    name = _RENAMED.get(name, name)
    try:
        zone(name)
    except WindowError:
        return None
    return name


# ---------------------------------------------------------------------- per-flow rules
@dataclass(frozen=True)
class WindowRules:
    """The window of one flow: the spec, the fallback zone, the policy for start-times outside
    it, and whether the recipient's zone comes from the number."""

    window: CallingWindow
    zone: str
    policy: str = "reject"
    by_number: bool = True

    def zones_of(self, numbers: Iterable[Any]) -> tuple[str, ...]:
        """The zones a call with these numbers may ring in (sorted, at least one)."""
        found: set[str] = set()
        for n in numbers:
            z = number_zone(str(n)) if self.by_number else None
            found.add(z or self.zone)
        return tuple(sorted(found)) or (self.zone,)

    def describe(self, zones: Iterable[str]) -> str:
        return f"calling window '{self.window.label}' in {', '.join(zones)}"

    def next_allowed(self, t: datetime, zones: Iterable[str]) -> datetime | None:
        """The first instant ≥ t at which the window is open in every one of `zones` (the
        common opening): each zone's next opening moves t on until all agree."""
        return _common_opening(self, t.astimezone(UTC), tuple(zones))

    def _next_allowed(self, t: datetime, zones: tuple[str, ...]) -> datetime | None:
        window = self.window
        return _agree(t, [partial(window.next_allowed, zone=zone(name)) for name in zones])


@dataclass(frozen=True)
class _Fields:
    """The window fields of Settings (what _rules reads)."""

    calling_window: str
    calling_window_tz: str
    calling_window_policy: str
    calling_window_margin_min: float
    calling_window_by_number: bool
    calling_windows: str
    time_zone: str


@lru_cache(maxsize=4096)
def _common_opening(rules: WindowRules, t: datetime, zones: tuple[str, ...]) -> datetime | None:
    """WindowRules.next_allowed, cached: a file's start-times repeat (many rows at 10:00)."""
    return rules._next_allowed(t, zones)


def _flow_entries(settings: Settings | _Fields) -> dict[str, Any]:
    raw = (settings.calling_windows or "").strip()
    if not raw:
        return {}
    return _parse_flows(raw)


@lru_cache(maxsize=8)
def _parse_flows(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise WindowError(f"CALLING_WINDOWS is not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(data, dict):
        raise WindowError('CALLING_WINDOWS must be a JSON object: {"<flow-id>": {"window": "...", ...}}')
    for flow, entry in data.items():
        if isinstance(entry, str):
            continue
        if not isinstance(entry, dict):
            raise WindowError(f"CALLING_WINDOWS: the entry of flow {flow} is neither a spec nor an object")
        unknown = set(entry) - {"window", "tz", "policy", "margin_min", "by_number"}
        if unknown:
            raise WindowError(f"CALLING_WINDOWS: flow {flow} has unknown field(s) {', '.join(sorted(unknown))} "
                              f"(window, tz, policy, margin_min, by_number)")
    return data


def rules_for(settings: Settings, flow: str) -> WindowRules | None:
    """The flow's window (its CALLING_WINDOWS entry over the deployment default), or None when
    no window applies. A setting that cannot be used raises WindowError."""
    return _rules(settings.calling_window, settings.calling_window_tz, settings.calling_window_policy,
                  settings.calling_window_margin_min, settings.calling_window_by_number, settings.calling_windows,
                  settings.time_zone, flow)


@lru_cache(maxsize=256)
def _rules(calling_window: str, calling_window_tz: str, calling_window_policy: str, calling_window_margin_min: float,
           calling_window_by_number: bool, calling_windows: str, time_zone: str, flow: str) -> WindowRules | None:
    """rules_for, once per setting and flow (ingest asks for every row; an error is raised
    again each time: lru_cache keeps no exceptions)."""
    settings = _Fields(calling_window, calling_window_tz, calling_window_policy, calling_window_margin_min,
                       calling_window_by_number, calling_windows, time_zone)
    entry = _flow_entries(settings).get(flow)
    if isinstance(entry, str):
        entry = {"window": entry}
    entry = dict(entry or {})
    spec = str(entry.get("window", settings.calling_window) or "").strip()
    if spec.lower() in OFF:
        return None
    policy = str(entry.get("policy", settings.calling_window_policy) or "reject").strip().lower()
    if policy not in POLICIES:
        raise WindowError(f"calling-window policy '{policy}' is neither 'reject' nor 'defer'")
    try:
        margin = float(entry.get("margin_min", settings.calling_window_margin_min) or 0)
    except (TypeError, ValueError):
        raise WindowError("calling-window margin_min is not a number of minutes") from None
    if not 0 <= margin < 24 * 60:
        raise WindowError("calling-window margin_min must be between 0 and 1439 minutes")
    tz = str(entry.get("tz", settings.calling_window_tz) or settings.time_zone).strip()
    zone(tz)
    by_number = entry.get("by_number", settings.calling_window_by_number)
    return WindowRules(parse_window(spec).with_margin(margin), tz, policy, bool(by_number))


# ---------------------------------------------------------------------- ingest
def _start_of(call: dict) -> datetime | None:
    text = call.get("start-time")
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _fmt(t: datetime, zone_name: str) -> str:
    return t.astimezone(zone(zone_name)).isoformat(timespec="seconds")


def screen_row(item: Any, flow: str, settings: Settings, now: float | None = None) -> Any:
    """Ingest's check of one row (the row as it is when no window applies, or it is no valid row).

    A start-time at which the window is closed: REJECTED with a reason naming the window and
    the zone (never the number), or under `defer` moved to the next opening, with a warning
    that says so. A row without a start-time passes: dispatch holds it until the window opens.
    A window setting that cannot be used rejects the row (nothing is sent at an unknown hour)."""
    from .contacts.model import RejectedRow, ValidRow  # noqa: PLC0415 - ingest has them loaded already

    if not isinstance(item, ValidRow):
        return item
    try:
        rules = rules_for(settings, flow)
    except WindowError as err:
        return RejectedRow(item.row, item.client_id, f"not sent: the calling window set for this flow cannot be "
                                                     f"used ({err})")
    if rules is None:
        return item
    start = _start_of(item.call)
    if start is None:
        return item
    instant = max(start.astimezone(UTC), datetime.fromtimestamp(time.time() if now is None else now, UTC))
    zones = rules.zones_of(item.call.get("contact-numbers", []))
    opens = rules.next_allowed(instant, zones)
    if opens == instant:
        return item
    where = rules.describe(zones)
    given = item.call["start-time"]
    if opens is None:
        return RejectedRow(item.row, item.client_id, f"start-time {given} is outside the {where}, which has no "
                                                     f"opening in the next {SEARCH_DAYS} days")
    if rules.policy == "defer":
        moved = opens.astimezone(start.tzinfo).isoformat(timespec="seconds")
        call = {**item.call, "start-time": moved}
        note = f"start-time {given} is outside the {where}: moved to the next opening, {moved}"
        return ValidRow(item.row, item.client_id, call, [*item.warnings, note])
    return RejectedRow(item.row, item.client_id, f"start-time {given} is outside the {where} (next opening "
                                                 f"{_fmt(opens, zones[0])}); give a start-time inside it, or "
                                                 f"leave it empty to call when the window is open")


def check_row(item: Any, flow: str, settings: Settings, now: float | None = None) -> tuple[Any, str]:
    """`phonon-outbound check`: the row as ingest would leave it, and, for a row that would be
    sent, a note when dispatch would hold it now ("held: … opens …"; "" when it would go)."""
    from .contacts.model import ValidRow  # noqa: PLC0415

    item = screen_row(item, flow, settings, now)
    if not isinstance(item, ValidRow):
        return item, ""
    rules = rules_for(settings, flow)
    if rules is None:
        return item, ""
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    zones = rules.zones_of(item.call.get("contact-numbers", []))
    start = _start_of(item.call)
    instant = max(at, start.astimezone(UTC)) if start else at
    opens = rules.next_allowed(instant, zones)
    if opens == instant:
        return item, ""
    when = _fmt(opens, zones[0]) if opens else f"not within {SEARCH_DAYS} days"
    return item, f"held: the {rules.describe(zones)} is closed now (opens {when})"


# ---------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class Wait:
    """Hold the chunk: hand it back after `seconds` (≤ 900, SQS's ceiling); `opens` is when the
    common opening comes (None: not within SEARCH_DAYS, or the setting is unusable)."""

    seconds: float
    reason: str
    opens: datetime | None = None


@dataclass
class _Notes:
    """When this process last wrote a job's waiting note, and what it said."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)


_notes = _Notes()


def chunk_wait(settings: Settings, jobs: JobsRepository, job: str, flow: str, calls: list[dict],
               now: float) -> Wait | None:
    """Dispatch's check just before a chunk is sent: None when every call may start now (or at
    its own start-time, when that is later and inside the window); else how long to wait.

    A call with a start-time in the future that is inside the window may be sent now (Phonon
    starts it then); every other call needs the window open now, in all its zones; the chunk
    waits for the first instant at which that holds for all its calls. While it waits, the job
    item says so (`window_wait`: reason, opens, since), refreshed every WAIT_NOTE_EVERY_S."""
    try:
        rules = rules_for(settings, flow)
    except WindowError as err:
        wait = Wait(MAX_DELAY_S, f"waiting: the calling window set for flow {flow} cannot be used ({err})")
        _note(jobs, job, wait, now)
        return wait
    if rules is None:
        return None
    # A chunk found sendable may still wait for the rate limit (at most dispatch_max_wait_s) and
    # a connection before its request starts: no chunk starts that close to a closing.
    guard_s = math.ceil(settings.dispatch_max_wait_s + settings.api_connect_timeout_s)
    guarded = replace(rules, window=replace(rules.window, margin_s=max(rules.window.margin_s, guard_s)))
    at = datetime.fromtimestamp(now, UTC)
    groups: dict[tuple[tuple[str, ...], datetime | None], None] = {}
    for call in calls:
        start = _start_of(call)
        groups[(rules.zones_of(call.get("contact-numbers", []) or []),
                start.astimezone(UTC) if start and start > at else None)] = None
    t = _send_time(rules, guarded, list(groups), at)
    if t == at:
        return None
    zones_all = sorted({z for zs, _ in groups for z in zs})
    where = rules.describe(zones_all)
    if t is None:
        wait = Wait(MAX_DELAY_S, f"waiting for the {where}: no common opening in the next {SEARCH_DAYS} days; "
                                 f"cancel the job or change the window")
    else:
        wait = Wait(min(MAX_DELAY_S, max(1.0, (t - at).total_seconds())),
                    f"waiting for the {where} (opens {_fmt(t, zones_all[0])})", t)
    _note(jobs, job, wait, now)
    return wait


def _send_time(rules: WindowRules, guarded: WindowRules, groups: list[tuple[tuple[str, ...], datetime | None]],
               at: datetime) -> datetime | None:
    """The first instant ≥ at at which every group (zones, future start-time or None) may be
    sent: a call whose start-time is later and inside the window may go any time before it;
    every other call needs the (guarded) window open then, in all its zones. Each group's next
    opening moves the instant on until all agree; None when they never do within SEARCH_DAYS."""
    def step(zones: tuple[str, ...], start: datetime | None) -> Callable[[datetime], datetime | None]:
        def next_for(t: datetime) -> datetime | None:
            if start is not None and start >= t and rules.next_allowed(start, zones) == start:
                return t  # Phonon starts it at its start-time, inside the window
            return guarded.next_allowed(t if start is None else max(t, start), zones)
        return next_for

    return _agree(at, [step(zones, start) for zones, start in groups])


def _agree(t: datetime, steps: list[Callable[[datetime], datetime | None]]) -> datetime | None:
    """The first instant ≥ t that every step leaves where it is: each step moves t on to its
    next allowed instant until none does (at most 64 rounds); None when a step has none."""
    for _ in range(64):
        moved = False
        for step in steps:
            n = step(t)
            if n is None:
                return None
            if n > t:
                t, moved = n, True
        if not moved:
            return t
    return None


def _note(jobs: JobsRepository, job: str, wait: Wait, now: float) -> None:
    """Say on the job item that it waits (at most every WAIT_NOTE_EVERY_S per process and
    opening): the summary and the local run show it; best effort (the wait itself stands)."""
    key = wait.opens.isoformat() if wait.opens else wait.reason
    last = _notes.seen.get(job)
    if last is not None and last[0] == key and now - last[1] < WAIT_NOTE_EVERY_S:
        return
    _notes.seen[job] = (key, now)
    if len(_notes.seen) > 4096:
        _notes.seen.clear()
    try:
        jobs.update_job(job, window_wait={"reason": wait.reason, "opens": key if wait.opens else "",
                                           "since": int(now)})
    except Exception:  # noqa: BLE001 - a note; the chunk waits whether or not it is written
        from .observability import logger  # noqa: PLC0415

        logger.warning("could not note the calling-window wait on the job", extra={"job": job})


def seconds_until(opens: str, now: float | None = None) -> float | None:
    """Seconds from now until an ISO `opens` (the job item's window_wait), None when unreadable."""
    try:
        when = datetime.fromisoformat(opens)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)
