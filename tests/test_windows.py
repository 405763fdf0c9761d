"""Rotation windows: parsing, inside/outside and the next opening, with the clock as an
argument (no sleeping), across midnight and daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credflip.errors import UsageError
from credflip.windows import parse_windows


def at(text: str) -> float:
    """``2026-03-06 08:00`` (UTC) as epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def utc(ts: float | None) -> str:
    assert ts is not None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def test_office_hours_in_seoul() -> None:
    office = parse_windows("Mon-Fri 09:00-16:00 Asia/Seoul")  # KST is UTC+9, no DST
    assert office.contains(at("2026-03-09 00:00"))  # Mon 09:00 KST: the start is inside
    assert office.contains(at("2026-03-09 06:59"))
    assert not office.contains(at("2026-03-09 07:00"))  # 16:00 KST: the end is not
    assert not office.contains(at("2026-03-07 02:00"))  # Saturday 11:00 KST
    friday_evening = at("2026-03-06 08:00")  # Fri 17:00 KST
    assert utc(office.next_opening(friday_evening)) == "2026-03-09 00:00"
    assert office.describe(at("2026-03-09 00:00")) == "Mon 2026-03-09 09:00 KST"
    inside = at("2026-03-10 03:00")
    assert office.next_opening(inside) == inside


def test_a_window_across_midnight_belongs_to_the_day_it_opens() -> None:
    night = parse_windows("Fri 22:00-02:00 UTC")
    assert night.contains(at("2026-03-06 22:00"))  # Friday
    assert night.contains(at("2026-03-07 01:59"))  # Saturday, still Friday's window
    assert not night.contains(at("2026-03-07 02:00"))
    assert not night.contains(at("2026-03-07 23:00"))  # Saturday's 22:00: not a Friday
    assert not night.contains(at("2026-03-06 01:00"))  # Friday early: Thursday's would be
    assert utc(night.next_opening(at("2026-03-07 02:00"))) == "2026-03-13 22:00"


def test_daily_single_days_wrapping_ranges_and_defaults() -> None:
    anyday = parse_windows("09:00-17:00")
    assert str(anyday) == "daily 09:00-17:00 UTC"
    assert all(anyday.contains(at(f"2026-03-{d:02d} 12:00")) for d in range(2, 9))
    saturday = parse_windows("sat 00:00-24:00")
    assert str(saturday) == "Sat 00:00-24:00 UTC"
    assert saturday.contains(at("2026-03-07 23:59"))
    assert not saturday.contains(at("2026-03-08 00:00"))
    weekend = parse_windows("Friday-Monday 10:00-11:00")
    assert str(weekend) == "Fri-Mon 10:00-11:00 UTC"
    days = [d for d in range(2, 9) if weekend.contains(at(f"2026-03-{d:02d} 10:30"))]
    assert days == [2, 6, 7, 8]  # Mon 2, Fri 6, Sat 7, Sun 8
    assert str(parse_windows("weekdays 1:00-2:00")) == "Mon-Fri 01:00-02:00 UTC"
    assert str(parse_windows("daily 22:00-00:00")) == "daily 22:00-00:00 UTC"


def test_several_windows_share_the_zone_one_of_them_names() -> None:
    spec = "Mon 09:00-12:00, Wed 13:00-15:00 Europe/Berlin"
    both = parse_windows(spec)
    assert str(both) == "Mon 09:00-12:00 Europe/Berlin, Wed 13:00-15:00 Europe/Berlin"
    assert both.contains(at("2026-03-02 08:30"))  # Mon 09:30 CET
    assert both.contains(at("2026-03-04 12:30"))  # Wed 13:30 CET
    assert not both.contains(at("2026-03-03 08:30"))  # Tuesday
    # After Monday's: Wednesday's, in Berlin time; after Wednesday's: next Monday.
    assert utc(both.next_opening(at("2026-03-02 11:00"))) == "2026-03-04 12:00"
    assert utc(both.next_opening(at("2026-03-04 14:00"))) == "2026-03-09 08:00"
    mixed = parse_windows("Mon 09:00-12:00 Asia/Seoul, Mon 09:00-12:00 Europe/Berlin")
    assert mixed.contains(at("2026-03-02 00:30")) and mixed.contains(at("2026-03-02 08:30"))
    assert parse_windows(str(mixed)) == mixed  # the canonical text parses back


def test_no_window_is_always_open() -> None:
    none = parse_windows("  ")
    assert not none and str(none) == ""
    assert none.contains(at("2026-03-07 03:00"))
    assert none.next_opening(at("2026-03-07 03:00")) == at("2026-03-07 03:00")


def test_spring_forward_opens_when_the_clock_jumps_past_the_start() -> None:
    """New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC). A window opening
    at 02:30 opens at the jump; one wholly inside the skipped hour opens a week later."""
    after_gap = parse_windows("Sun 02:30-04:00 America/New_York")
    assert not after_gap.contains(at("2026-03-08 06:59"))  # 01:59 EST
    assert after_gap.contains(at("2026-03-08 07:00"))  # 03:00 EDT
    assert utc(after_gap.next_opening(at("2026-03-08 05:00"))) == "2026-03-08 07:00"
    assert after_gap.describe(at("2026-03-08 07:00")) == "Sun 2026-03-08 03:00 EDT"
    skipped = parse_windows("Sun 02:10-02:50 America/New_York")
    assert utc(skipped.next_opening(at("2026-03-08 05:00"))) == "2026-03-15 06:10"  # EDT
    # A daily window keeps its wall-clock time: an hour earlier in UTC after the change.
    daily = parse_windows("daily 09:00-10:00 America/New_York")
    assert utc(daily.next_opening(at("2026-03-07 15:00"))) == "2026-03-08 13:00"
    assert utc(daily.next_opening(at("2026-03-06 15:00"))) == "2026-03-07 14:00"


def test_fall_back_repeats_an_hour_and_can_reopen_a_window() -> None:
    """New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:00-02:00
    happens twice."""
    repeated = parse_windows("Sun 01:00-01:30 America/New_York")
    assert repeated.contains(at("2026-11-01 05:15"))  # 01:15 EDT
    assert not repeated.contains(at("2026-11-01 05:45"))  # 01:45 EDT
    assert repeated.contains(at("2026-11-01 06:15"))  # 01:15 EST, the second time
    assert utc(repeated.next_opening(at("2026-11-01 05:31"))) == "2026-11-01 06:00"
    # Closed at 01:30 EDT; the clock going back to 01:00 reopens it, at no 00:30.
    reopened = parse_windows("00:30-01:30 America/New_York")
    assert utc(reopened.next_opening(at("2026-11-01 05:31"))) == "2026-11-01 06:00"
    assert reopened.describe(at("2026-11-01 06:00")) == "Sun 2026-11-01 01:00 EST"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("Mon-Fri", "write [DAYS] HH:MM-HH:MM [ZONE]"),
        ("Mon-Fri 9-16 Asia/Seoul", "write [DAYS] HH:MM-HH:MM [ZONE]"),
        ("Mon-Fri 09:00-16:00 Asia/Seoul,", "write [DAYS] HH:MM-HH:MM [ZONE]"),
        ("Funday 09:00-10:00", "'Funday' is not a day"),
        ("Mon-Someday 09:00-10:00", "'Someday' is not a day"),
        ("09:00-09:00", "it opens and closes at 09:00"),
        ("25:00-26:00", "25:00 is not a time of day"),
        ("09:60-10:00", "09:60 is not a time of day"),
        ("24:00-01:00", "24:00 is not a time of day"),
        ("09:00-24:30", "24:30 is not a time of day"),
        ("09:00-10:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("09:00-10:00 ../../etc/passwd", "unknown time zone"),
        ("Mon 09:00-10:00 Asia/Seoul, Tue 09:00-10:00 UTC, Wed 09:00-10:00", "give each window"),
    ],
)
def test_bad_windows_get_one_clear_line(spec: str, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_windows(spec)
    message = str(refused.value)
    assert message.startswith("invalid rotation window ") and says in message
    assert "\n" not in message


ZONES = ["UTC", "Asia/Seoul", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
DAYS = ["", "daily ", "Mon ", "Sat ", "Mon-Fri ", "Fri-Mon ", "Sun "]


@settings(max_examples=40, deadline=None)
@given(
    days=st.sampled_from(DAYS),
    start=st.integers(0, 23 * 60 + 59),
    length=st.integers(1, 24 * 60 - 1),
    zone=st.sampled_from(ZONES),
    now=st.integers(int(at("2026-01-01 00:00")), int(at("2026-12-31 00:00"))),
)
def test_the_next_opening_is_the_first_minute_inside(
    days: str, start: int, length: int, zone: str, now: int
) -> None:
    """Against a minute-by-minute walk: nothing between *now* and the opening is inside,
    the opening is. (Lord Howe moves its clock by half an hour.)"""
    end = (start + length) % (24 * 60)
    spec = f"{days}{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d} {zone}"
    windows = parse_windows(spec)
    opening = windows.next_opening(now)
    assert opening is not None and opening >= now and windows.contains(opening), spec
    first_minute = now - now % 60 + 60
    assert all(not windows.contains(t) for t in range(first_minute, int(opening), 60)), spec
