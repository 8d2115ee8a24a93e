"""Calling windows (docs/calling-windows.md): the spec parser, the next allowed instant (DST
edges, blackout dates, the week's wrap, margins), the per-flow rules, ingest's row screen and
dispatch's chunk check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from phonon_outbound.contacts.model import RejectedRow, ValidRow
from phonon_outbound.settings import Settings
from phonon_outbound.status import Status
from phonon_outbound.windows import (
    MAX_DELAY_S,
    WindowError,
    check_row,
    chunk_wait,
    number_zone,
    parse_window,
    rules_for,
    screen_row,
    zone,
)

IST = zone("Asia/Kolkata")
NY = zone("America/New_York")
LONDON = zone("Europe/London")
INDIAN = "919812345678"  # +91: one zone (Asia/Kolkata)
CALIFORNIAN = "14155550100"  # +1 415: America/Los_Angeles
RUSSIAN = "79161234567"  # +7 mobile: many zones fit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utc(text: str) -> datetime:
    return at(text).astimezone(UTC)


# ---------------------------------------------------------------------- parser
def test_a_spec_with_several_ranges_days_and_blackouts_is_read():
    w = parse_window("Mon-Fri 09:00-13:00, 14:00-21:00; Sat 10:00-14:00; except 2026-12-25, 2026-12-30..2027-01-01")
    assert w.days[0] == ((9 * 3600, 13 * 3600), (14 * 3600, 21 * 3600))
    assert w.days[5] == ((10 * 3600, 14 * 3600),)
    assert w.days[6] == ()
    assert {d.isoformat() for d in w.blackouts} == {"2026-12-25", "2026-12-30", "2026-12-31", "2027-01-01"}


def test_day_ranges_wrap_over_the_end_of_the_week_and_names_may_be_long():
    w = parse_window("Friday-Monday 10:00-12:00")
    assert [bool(d) for d in w.days] == [True, False, False, False, True, True, True]
    assert [bool(d) for d in parse_window("weekdays 09:00-17:00").days] == [True] * 5 + [False] * 2


def test_a_range_over_midnight_continues_the_next_day():
    w = parse_window("Sat 22:00-02:00")
    assert w.days[5] == ((22 * 3600, 86400),)
    assert w.days[6] == ((0, 2 * 3600),)


@pytest.mark.parametrize(("spec", "says"), [
    ("", "empty"),
    ("Mon-Sat", "needs days and hours"),
    ("Funday 09:00-10:00", "'Funday' in 'Funday 09:00-10:00' is not a day"),
    ("Mon 9-21", "'9' in 'Mon 9-21' is not a time of day (HH:MM"),
    ("Mon 09:00-25:00", "'25:00' in 'Mon 09:00-25:00' is not a time of day"),
    ("Mon 09:00-09:00", "is empty: it starts when it ends"),
    ("Mon 09:00", "is not a range of hours"),
    ("except 2026-02-30", "'2026-02-30' in 'except 2026-02-30' is not a real date"),
    ("Mon 09:00-10:00; except 25/12/2026", "'25/12/2026' in 'except 25/12/2026' is not a date"),
    ("Mon 09:00-10:00; except 2027-01-01..2026-12-25", "first date first"),
    ("except 2026-12-25", "names no days and hours"),
])
def test_a_bad_spec_is_refused_with_what_and_where(spec, says):
    with pytest.raises(WindowError) as err:
        parse_window(spec)
    assert says in str(err.value)


# ---------------------------------------------------------------------- next opening
def test_inside_the_window_a_call_may_start_at_once_and_after_closing_at_the_next_opening():
    w = parse_window("Mon-Sat 09:00-21:00")
    inside = utc("2026-12-01T20:59:59+05:30")  # a Tuesday
    assert w.next_allowed(inside, IST) == inside
    assert w.next_allowed(utc("2026-12-01T21:00:00+05:30"), IST) == utc("2026-12-02T09:00:00+05:30")
    assert w.next_allowed(utc("2026-12-02T03:00:00+05:30"), IST) == utc("2026-12-02T09:00:00+05:30")


def test_the_week_wraps_saturday_night_to_monday_morning():
    w = parse_window("Mon-Sat 09:00-21:00")
    assert w.next_allowed(utc("2026-12-05T21:30:00+05:30"), IST) == utc("2026-12-07T09:00:00+05:30")


def test_a_blackout_date_is_skipped_in_the_recipients_local_calendar():
    w = parse_window("daily 09:00-21:00; except 2026-12-25")
    # 2026-12-24 23:00 UTC is already 12-25 in India: closed all day there
    assert w.next_allowed(utc("2026-12-24T23:00:00+00:00"), IST) == utc("2026-12-26T09:00:00+05:30")
    # and not yet 12-25 in New York: open there
    assert w.next_allowed(utc("2026-12-24T15:00:00+00:00"), NY) == utc("2026-12-24T15:00:00+00:00")


def test_a_margin_stops_calls_in_the_last_minutes_before_closing():
    w = parse_window("Mon-Sat 09:00-21:00").with_margin(15)
    assert w.allowed(utc("2026-12-01T20:44:59+05:30"), IST)
    assert not w.allowed(utc("2026-12-01T20:45:00+05:30"), IST)
    assert w.next_allowed(utc("2026-12-01T20:50:00+05:30"), IST) == utc("2026-12-02T09:00:00+05:30")
    assert w.closes_after(utc("2026-12-01T12:00:00+05:30"), IST) == utc("2026-12-01T20:45:00+05:30")


def test_an_opening_over_midnight_is_one_opening_and_its_margin_is_at_its_real_end():
    w = parse_window("daily 22:00-02:00").with_margin(10)
    assert w.allowed(utc("2026-12-01T23:59:59+05:30"), IST)
    assert w.allowed(utc("2026-12-02T00:00:00+05:30"), IST)  # no margin at midnight
    assert not w.allowed(utc("2026-12-02T01:50:00+05:30"), IST)
    assert w.next_allowed(utc("2026-12-02T01:55:00+05:30"), IST) == utc("2026-12-02T22:00:00+05:30")


def test_dst_start_an_opening_that_begins_in_the_missing_hour_begins_when_clocks_read_it_again():
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT; 02:30 never happens
    w = parse_window("Sun 02:30-04:00")
    assert w.next_allowed(utc("2026-03-08T01:00:00-05:00"), NY) == utc("2026-03-08T03:30:00-04:00")
    # a window inside the missing hour does not exist that day: the next Sunday's
    gap = parse_window("Sun 02:10-02:50")
    assert gap.next_allowed(utc("2026-03-08T01:00:00-05:00"), NY) == utc("2026-03-15T02:10:00-04:00")


def test_dst_end_a_closing_in_the_repeated_hour_is_its_first_occurrence():
    # 2026-11-01 in New York: 01:00-02:00 happens twice (EDT, then EST)
    w = parse_window("Sun 00:00-01:30")
    first_0130 = utc("2026-11-01T01:30:00-04:00")
    assert w.closes_after(utc("2026-11-01T00:10:00-04:00"), NY) == first_0130
    assert not w.allowed(utc("2026-11-01T01:15:00-05:00"), NY)  # the second 01:15: after closing


def test_dst_the_opening_is_at_local_wall_time_on_both_sides_of_a_change():
    w = parse_window("daily 09:00-17:00")
    before = w.next_allowed(utc("2026-03-28T18:00:00+00:00"), LONDON)
    after = w.next_allowed(utc("2026-03-29T18:00:00+01:00"), LONDON)
    assert before == utc("2026-03-29T09:00:00+01:00")  # summer time began that night
    assert after == utc("2026-03-30T09:00:00+01:00")
    assert w.next_allowed(utc("2026-10-24T18:00:00+01:00"), LONDON) == utc("2026-10-25T09:00:00+00:00")


def test_a_window_that_never_opens_has_no_next_opening():
    w = parse_window("Mon 09:00-10:00; except 2026-12-01..2027-11-30, 2027-12-01..2028-06-30")
    assert w.next_allowed(utc("2026-12-01T00:00:00+00:00"), IST) is None


# ---------------------------------------------------------------------- zones and rules
def test_a_numbers_zone_is_used_where_exactly_one_fits():
    assert number_zone(INDIAN) == "Asia/Kolkata"
    assert number_zone(CALIFORNIAN) == "America/Los_Angeles"
    assert number_zone(RUSSIAN) is None
    assert number_zone("999") is None
    assert number_zone("+91 98123") is None and number_zone("") is None


def test_windows_are_off_unless_set_and_a_flow_entry_overrides_the_default():
    assert rules_for(Settings(), "Flow1234") is None
    s = Settings(calling_window="Mon-Sat 09:00-21:00", calling_window_policy="defer",
                 calling_windows=json.dumps({"Other987": {"window": "daily 10:00-12:00", "tz": "Europe/London",
                                                          "margin_min": 5},
                                             "Free0000": "off"}))
    default = rules_for(s, "Flow1234")
    assert default is not None and default.window.spec == "Mon-Sat 09:00-21:00" and default.policy == "defer"
    assert default.zone == "Asia/Kolkata"  # the deployment's TIME_ZONE
    other = rules_for(s, "Other987")
    assert other is not None and other.window.spec == "daily 10:00-12:00" and other.zone == "Europe/London"
    assert other.window.margin_s == 300 and other.policy == "defer"
    assert rules_for(s, "Free0000") is None


@pytest.mark.parametrize(("settings", "says"), [
    ({"calling_window": "Mon 09:00-10:00", "calling_window_policy": "skip"}, "neither 'reject' nor 'defer'"),
    ({"calling_window": "Mon 09:00-10:00", "calling_window_tz": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
    ({"calling_windows": "{not json"}, "CALLING_WINDOWS is not JSON"),
    ({"calling_windows": '{"Flow1234": {"window": "Mon 09:00-10:00", "hours": 3}}'}, "unknown field(s) hours"),
])
def test_unusable_settings_are_refused_with_a_reason(settings, says):
    with pytest.raises(WindowError) as err:
        rules_for(Settings(**settings), "Flow1234")
    assert says in str(err.value)


def test_a_call_whose_numbers_are_in_two_zones_waits_for_their_common_opening():
    rules = rules_for(Settings(calling_window="daily 09:00-21:00"), "Flow1234")
    assert rules is not None
    zones = rules.zones_of([INDIAN, CALIFORNIAN])
    assert zones == ("America/Los_Angeles", "Asia/Kolkata")
    # 09:00-21:00 IST = 03:30-15:30 UTC; 09:00-21:00 PST = 17:00-05:00 UTC: they meet 03:30-05:00 UTC
    t = rules.next_allowed(utc("2026-12-01T12:00:00+00:00"), zones)
    assert t == utc("2026-12-02T03:30:00+00:00")
    assert rules.zones_of([RUSSIAN]) == ("Asia/Kolkata",)  # several zones fit: the flow's


# ---------------------------------------------------------------------- ingest
def row(start: str | None = None, numbers: tuple[str, ...] = (INDIAN,)) -> ValidRow:
    call: dict = {"client-identifier": "C-1"}
    if start:
        call["start-time"] = start
    call.update({"contact-numbers": list(numbers), "keys": []})
    return ValidRow(7, "C-1", call)


NOW = utc("2026-12-01T10:00:00+05:30").timestamp()


def test_ingest_rejects_a_start_time_outside_the_window_naming_window_and_zone_never_the_number():
    s = Settings(calling_window="Mon-Sat 09:00-21:00")
    out = screen_row(row("2026-12-01T22:00:00+05:30"), "Flow1234", s, NOW)
    assert isinstance(out, RejectedRow)
    assert "start-time 2026-12-01T22:00:00+05:30 is outside the calling window 'Mon-Sat 09:00-21:00' in " \
           "Asia/Kolkata" in out.reason
    assert "next opening 2026-12-02T09:00:00+05:30" in out.reason
    assert "9812345678" not in out.reason and "678" not in out.reason.replace("2026", "")


def test_ingest_under_defer_moves_the_start_time_to_the_next_opening_and_says_so():
    s = Settings(calling_window="Mon-Sat 09:00-21:00", calling_window_policy="defer")
    out = screen_row(row("2026-12-05T23:30:00+05:30"), "Flow1234", s, NOW)  # a Saturday night
    assert isinstance(out, ValidRow)
    assert out.call["start-time"] == "2026-12-07T09:00:00+05:30"
    assert list(out.call) == ["client-identifier", "start-time", "contact-numbers", "keys"]
    assert out.warnings == ["start-time 2026-12-05T23:30:00+05:30 is outside the calling window 'Mon-Sat "
                            "09:00-21:00' in Asia/Kolkata: moved to the next opening, 2026-12-07T09:00:00+05:30"]


def test_ingest_keeps_rows_inside_the_window_and_rows_without_a_start_time():
    s = Settings(calling_window="Mon-Sat 09:00-21:00")
    inside = row("2026-12-01T20:00:00+05:30")
    assert screen_row(inside, "Flow1234", s, NOW) is inside
    none = row()
    assert screen_row(none, "Flow1234", s, utc("2026-12-01T23:00:00+05:30").timestamp()) is none


def test_ingest_checks_the_recipients_zone_not_the_flows():
    # 20:00 in India is 06:30 in California: outside a 09:00-21:00 window there
    s = Settings(calling_window="daily 09:00-21:00")
    out = screen_row(row("2026-12-01T20:00:00+05:30", (CALIFORNIAN,)), "Flow1234", s, NOW)
    assert isinstance(out, RejectedRow) and "in America/Los_Angeles" in out.reason


def test_ingest_rejects_rows_when_the_window_setting_is_unusable():
    s = Settings(calling_window="Mon-Sat 9-21")
    out = screen_row(row(), "Flow1234", s, NOW)
    assert isinstance(out, RejectedRow) and "calling window set for this flow cannot be used" in out.reason


def test_check_says_which_rows_would_be_held_now():
    s = Settings(calling_window="Mon-Sat 09:00-21:00")
    night = utc("2026-12-01T22:00:00+05:30").timestamp()
    item, note = check_row(row(), "Flow1234", s, night)
    assert isinstance(item, ValidRow)
    assert note == ("held: the calling window 'Mon-Sat 09:00-21:00' in Asia/Kolkata is closed now (opens "
                    "2026-12-02T09:00:00+05:30)")
    assert check_row(row(), "Flow1234", s, NOW)[1] == ""


# ---------------------------------------------------------------------- dispatch
class JobNotes:
    """Records the job updates dispatch's check makes (the store's update_job)."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict]] = []

    def update_job(self, job: str, **attrs: object) -> dict:
        self.updates.append((job, attrs))
        return {}


def calls(*numbers: str, start: str | None = None) -> list[dict]:
    return [row(start, (n,)).call for n in numbers]


DISPATCH = Settings(calling_window="Mon-Sat 09:00-21:00", dispatch_max_wait_s=20, api_connect_timeout_s=3.05)


def test_dispatch_sends_while_the_window_is_open():
    assert chunk_wait(DISPATCH, JobNotes(), "job1", "Flow1234", calls(INDIAN), NOW) is None
    assert chunk_wait(Settings(), JobNotes(), "job1", "Flow1234", calls(INDIAN), NOW) is None


def test_dispatch_holds_a_chunk_while_closed_in_steps_of_at_most_900_s_and_notes_it_on_the_job():
    notes = JobNotes()
    night = utc("2026-12-01T22:00:00+05:30").timestamp()
    wait = chunk_wait(DISPATCH, notes, "job1", "Flow1234", calls(INDIAN, INDIAN), night)
    assert wait is not None and wait.seconds == MAX_DELAY_S
    assert wait.opens == utc("2026-12-02T09:00:00+05:30")
    assert wait.reason == ("waiting for the calling window 'Mon-Sat 09:00-21:00' in Asia/Kolkata "
                           "(opens 2026-12-02T09:00:00+05:30)")
    assert notes.updates == [("job1", {"window_wait": {"reason": wait.reason, "opens": "2026-12-02T03:30:00+00:00",
                                                       "since": int(night)}})]
    # just before the opening: the exact rest of the wait
    soon = utc("2026-12-02T08:59:30+05:30").timestamp()
    wait = chunk_wait(DISPATCH, notes, "job1", "Flow1234", calls(INDIAN), soon)
    assert wait is not None and wait.seconds == 30


def test_dispatch_starts_no_chunk_so_close_to_closing_that_a_rate_limit_wait_could_pass_it():
    # a sendable chunk may wait dispatch_max_wait_s (20 s) plus a connection (3.05 s)
    ok = utc("2026-12-01T20:59:35+05:30").timestamp()
    late = utc("2026-12-01T20:59:37+05:30").timestamp()
    assert chunk_wait(DISPATCH, JobNotes(), "job1", "Flow1234", calls(INDIAN), ok) is None
    assert chunk_wait(DISPATCH, JobNotes(), "job1", "Flow1234", calls(INDIAN), late) is not None


def test_dispatch_sends_calls_scheduled_inside_the_window_while_it_is_closed_now():
    night = utc("2026-12-01T22:00:00+05:30").timestamp()
    scheduled = calls(INDIAN, start="2026-12-02T10:00:00+05:30")
    assert chunk_wait(DISPATCH, JobNotes(), "job1", "Flow1234", scheduled, night) is None
    # but one unscheduled call in the same chunk holds the whole chunk (one request)
    mixed = scheduled + calls(INDIAN)
    assert chunk_wait(DISPATCH, JobNotes(), "job1", "Flow1234", mixed, night) is not None


def test_dispatch_waits_for_the_common_opening_of_a_chunk_with_rows_in_two_zones():
    s = Settings(calling_window="daily 09:00-21:00", dispatch_max_wait_s=0, api_connect_timeout_s=0)
    noon_utc = utc("2026-12-01T12:00:00+00:00").timestamp()
    wait = chunk_wait(s, JobNotes(), "job1", "Flow1234", calls(INDIAN, CALIFORNIAN), noon_utc)
    assert wait is not None and wait.opens == utc("2026-12-02T03:30:00+00:00")
    assert "in America/Los_Angeles, Asia/Kolkata" in wait.reason


def test_dispatch_holds_everything_when_the_window_setting_is_unusable():
    notes = JobNotes()
    wait = chunk_wait(Settings(calling_window="Mon-Sat 09:00-21:00", calling_window_policy="later"), notes, "job1",
                      "Flow1234", calls(INDIAN), NOW)
    assert wait is not None and wait.seconds == MAX_DELAY_S and "cannot be used" in wait.reason
    assert notes.updates and notes.updates[0][1]["window_wait"]["reason"] == wait.reason


def test_a_waiting_job_is_noted_again_only_after_a_while_or_when_its_opening_changes():
    notes = JobNotes()
    night = utc("2026-12-01T22:00:00+05:30").timestamp()
    for k in range(5):
        chunk_wait(DISPATCH, notes, "job2", "Flow1234", calls(INDIAN), night + k)
    assert len(notes.updates) == 1
    chunk_wait(DISPATCH, notes, "job2", "Flow1234", calls(INDIAN), night + timedelta(minutes=11).total_seconds())
    assert len(notes.updates) == 2


# ---------------------------------------------------------------------- phonon-outbound check
def test_check_reports_rows_the_window_rejects_and_rows_it_would_hold_before_anything_is_sent(tmp_path):
    import csv

    from phonon_outbound_dev.check import check_file

    # Given a window closed for the next week (blackout dates) and open on a Monday after it
    today = datetime.now(IST).date()
    monday = today + timedelta(days=14 - today.weekday())
    spec = f"Mon 09:00-10:00; except {today - timedelta(days=1)}..{today + timedelta(days=7)}"
    path = tmp_path / "c.csv"
    path.write_text("client-identifier,phone,start-time\n"
                    f"A-1,9812345670,{today + timedelta(days=1)} 09:30\n"  # a blackout date
                    f"A-2,9812345671,{monday} 09:30\n"  # inside the window
                    "A-3,9812345672,\n")  # no start-time: waits for the window
    s = Settings(calling_window=spec, default_flow_id="Flow1234")
    # When the file is checked
    summary = check_file(path, s, tmp_path / "out")
    with (tmp_path / "out" / "c.csv.results.csv").open(newline="") as fh:
        report = list(csv.DictReader(fh))
    # Then the blackout row is REJECTED, the scheduled one passes, the unscheduled one is held
    assert [r["status"] for r in report] == [Status.REJECTED, Status.ACCEPTED, Status.ACCEPTED]
    assert "is outside the calling window" in report[0]["reason"] and "in Asia/Kolkata" in report[0]["reason"]
    assert report[1]["reason"] == ""
    assert report[2]["reason"].startswith(f"held: the calling window '{spec}' in Asia/Kolkata is closed now (opens ")
    assert any(n.startswith("1 row(s) would be held now: the calling window") for n in summary["notes"])
