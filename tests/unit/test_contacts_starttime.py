"""start-time: docs/contact-files.md "Start time", value by value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import StartTimeParser

# 2026-06-01 00:30 UTC: already 06:00 on June 1st in India, still May 31st in New York.
NOW = datetime(2026, 6, 1, 0, 30, tzinfo=UTC)


@pytest.fixture
def parse():
    return StartTimeParser("Asia/Kolkata", NOW).parse


@pytest.mark.parametrize(("cell", "sent"), [
    ("2026-06-29T09:42:00+05:30", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29T09:42:00+0530", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29T09:42:00Z", "2026-06-29T09:42:00+00:00"),
    ("2026-06-29T09:42:00.123456+05:30", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29T09:42-04:00", "2026-06-29T09:42:00-04:00"),
    ("2026-06-29 09:42:00+05:30", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29t09:42:00z", "2026-06-29T09:42:00+00:00"),
])
def test_iso_8601_with_an_offset_keeps_the_offset_and_drops_fractions(parse, cell, sent):
    assert parse(cell) == (sent, None)


@pytest.mark.parametrize(("cell", "sent"), [
    ("2026-06-29 09:42", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29 09:42:05", "2026-06-29T09:42:05+05:30"),
    ("2026-06-29T09:42", "2026-06-29T09:42:00+05:30"),
    ("2026-06-29T09:42:05", "2026-06-29T09:42:05+05:30"),
    ("2026-6-9 9:05", "2026-06-09T09:05:00+05:30"),
])
def test_without_offset_it_is_read_in_the_configured_zone(parse, cell, sent):
    assert parse(cell) == (sent, None)


def test_the_zone_is_configurable_and_its_offset_follows_daylight_saving():
    parse = StartTimeParser("Europe/London", NOW).parse
    assert parse("2026-06-29 09:42") == ("2026-06-29T09:42:00+01:00", None)
    assert parse("2026-12-29 09:42") == ("2026-12-29T09:42:00+00:00", None)


def test_a_past_time_today_is_accepted(parse):
    assert parse("2026-06-01 00:01") == ("2026-06-01T00:01:00+05:30", None)


def test_a_date_before_today_is_rejected(parse):
    value, reason = parse("2026-05-31 23:59")
    assert value is None
    assert reason == ("start-time '2026-05-31 23:59' is in the past: 2026-05-31 is before today "
                      "(2026-06-01 at UTC+05:30)")


def test_today_is_judged_in_the_given_offset(parse):
    # Still May 31st in UTC-04:00, so May 31st is today there
    assert parse("2026-05-31T20:00:00-04:00") == ("2026-05-31T20:00:00-04:00", None)
    assert parse("2026-05-31T20:00:00+05:30")[1].startswith("start-time '2026-05-31T20:00:00+05:30' is in the past")


def test_a_date_without_time_is_rejected_saying_which_format_to_use(parse):
    value, reason = parse("2026-06-29")
    assert value is None
    assert reason.startswith("start-time '2026-06-29' has a date but no time; write it as YYYY-MM-DD HH:MM[:SS] "
                             "(e.g. 2026-06-02 09:30, read in Asia/Kolkata) or ISO-8601 with an offset")


@pytest.mark.parametrize(("cell", "suggestion"), [
    ("29/06/2026", "here 2026-06-29 HH:MM"),
    ("29/06/2026 10:15", "here 2026-06-29 10:15"),
    ("29-06-2026 10:15:30", "here 2026-06-29 10:15:30"),
    ("29.06.26", "here 2026-06-29 HH:MM"),
])
def test_a_day_first_date_is_rejected_with_the_year_first_spelling(parse, cell, suggestion):
    value, reason = parse(cell)
    assert value is None
    assert reason == (f"start-time '{cell}' is day-first; write it year-first with a time, as "
                      f"YYYY-MM-DD HH:MM[:SS]: {suggestion}")


def test_an_ambiguous_day_or_month_first_date_is_rejected(parse):
    _, reason = parse("06/07/2026 10:00")
    assert reason.startswith("start-time '06/07/2026 10:00' is not year-first (day-first or month-first dates are "
                             "ambiguous); write it as YYYY-MM-DD HH:MM[:SS]")


@pytest.mark.parametrize(("cell", "words"), [
    ("2026-02-30 10:00", "is not a real date and time"),
    ("2026-06-29 24:00", "is not a real date and time"),
    ("2026-06-29T10:00:00+25:00", "has an impossible UTC offset"),
    ("46203.5", "is a spreadsheet date serial number"),
])
def test_other_values_are_rejected_with_the_format_to_use(parse, cell, words):
    value, reason = parse(cell)
    assert value is None
    assert reason.startswith(f"start-time '{cell}' {words}")
    assert "YYYY-MM-DD HH:MM[:SS]" in reason


@pytest.mark.parametrize("cell", ["tomorrow 10am", "Asha Rao", "9876543210", "asha@example.com"])
def test_a_value_that_is_no_date_is_not_echoed_only_described(parse, cell):
    # a cell that is not a date may be anything (a name, a number): the reason gives its length only
    value, reason = parse(cell)
    assert value is None
    assert reason.startswith(f"start-time (a value of {len(cell)} characters) is not a date and time")
    assert cell not in reason


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        StartTimeParser("Asia/Kolkata", datetime(2026, 1, 1))
