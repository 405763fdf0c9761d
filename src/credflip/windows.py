"""Rotation windows: when a scheduled rotation may start. Pure: the clock is an argument.

A spec is one or more windows separated by ``,``::

    Mon-Fri 09:00-16:00 Asia/Seoul
    Sat 01:00-05:00 Europe/Berlin, Sun 01:00-05:00 Europe/Berlin
    daily 22:00-02:00 America/New_York
    09:00-17:00

Each window is ``[DAYS] HH:MM-HH:MM [ZONE]``:

- DAYS: ``Mon``, ``Mon-Fri``, ``Fri-Mon`` (wrapping), ``daily`` (or nothing),
  ``weekdays``, ``weekends``; full names too, any case. They name the day the
  window *opens*: one that ends at or before its start runs past midnight into
  the next day (``Fri 22:00-02:00`` is Friday 22:00 to Saturday 02:00).
- HH:MM-HH:MM: wall-clock times in ZONE, the end excluded; ``24:00`` ends at
  midnight.
- ZONE: an IANA (zoneinfo) name. A window without one takes the zone the other
  windows name when they all name the same one, else UTC when none names any.

Windows follow the zone's wall clock, so daylight saving time moves them with
it: a window that opens inside a skipped hour opens when the clock jumps past
its start, and an hour repeated in autumn is inside a window twice. The empty
spec is "no window": always open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import UsageError

__all__ = ["Window", "Windows", "parse_windows"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAMED = {"daily": range(7), "weekdays": range(5), "weekends": range(5, 7)}
_TIME = r"(\d{1,2}):(\d{2})"
_WINDOW_RE = re.compile(
    rf"(?:(?P<days>[A-Za-z]+(?:-[A-Za-z]+)?)\s+)?{_TIME}\s*-\s*{_TIME}(?:\s+(?P<zone>\S+))?"
)
_EXAMPLE = "e.g. 'Mon-Fri 09:00-16:00 Asia/Seoul'"
#: How far ahead :meth:`Windows.next_opening` looks: every weekly window opens within it.
_HORIZON_DAYS = 8


def _day(word: str, spec: str) -> int:
    low = word.lower()
    for names in (_DAYS, _FULL):
        if low in names:
            return names.index(low)
    raise UsageError(
        f"invalid rotation window {spec!r}: {word!r} is not a day; use Mon..Sun, a range "
        f"such as Mon-Fri, or daily ({_EXAMPLE})"
    )


def _days(text: str | None, spec: str) -> frozenset[int]:
    if text is None or text.lower() in _NAMED:
        return frozenset(_NAMED[(text or "daily").lower()])
    first, _, last = text.partition("-")
    start = _day(first, spec)
    end = _day(last, spec) if last else start
    return frozenset((start + i) % 7 for i in range((end - start) % 7 + 1))


def _minute(hours: str, minutes: str, spec: str, *, end: bool) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and (m or not end)):
        raise UsageError(
            f"invalid rotation window {spec!r}: {hours}:{minutes} is not a time of day; use "
            f"00:00 to 23:59 (24:00 as an end) ({_EXAMPLE})"
        )
    return h * 60 + m


def _zone(name: str, spec: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"invalid rotation window {spec!r}: unknown time zone {name!r}; use an IANA name "
            f"such as Asia/Seoul, Europe/Berlin or UTC"
        ) from None


@dataclass(frozen=True)
class Window:
    """One window: the weekdays it opens on (Monday is 0), its wall-clock start and end
    (minutes after midnight; an end at or before the start is on the next day), its zone."""

    days: frozenset[int]
    start: int
    end: int
    zone: ZoneInfo

    def contains(self, now: float) -> bool:
        """Whether the instant *now* (epoch seconds) is inside this window."""
        local = datetime.fromtimestamp(now, self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        opened_today = today in self.days and minute >= self.start
        return opened_today or ((today - 1) % 7 in self.days and minute < self.end)

    def starts(self, around: date) -> list[float]:
        """The instants near the local day *around* at which the wall clock reads this
        window's start (both readings of a repeated hour; the clock may skip it)."""
        out = []
        for offset in range(-1, _HORIZON_DAYS + 1):
            day = around + timedelta(days=offset)
            wall = datetime.combine(day, time(self.start // 60, self.start % 60))
            for fold in (0, 1):
                out.append(wall.replace(tzinfo=self.zone, fold=fold).timestamp())
        return out

    def __str__(self) -> str:
        return f"{_describe_days(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)} {self.zone.key}"


@dataclass(frozen=True)
class Windows:
    """A spec's windows; none at all is always open."""

    windows: tuple[Window, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.windows)

    def contains(self, now: float) -> bool:
        """Whether a new rotation may start at *now* (epoch seconds)."""
        return not self.windows or any(w.contains(now) for w in self.windows)

    def next_opening(self, now: float) -> float | None:
        """The first instant at or after *now* inside a window (*now* itself while one is
        open); None only when no window opens within eight days (one inside an hour
        that daylight saving time skips every time)."""
        if self.contains(now):
            return now
        candidates: set[float] = set()
        for window in self.windows:
            around = datetime.fromtimestamp(now, window.zone).date()
            candidates.update(window.starts(around))
            candidates.update(_transitions(window.zone, now))
        opening = sorted(c for c in candidates if c >= now and self.contains(c))
        return opening[0] if opening else None

    def describe(self, at: float) -> str:
        """*at* as the wall clock of the first window open then reads it (else UTC):
        ``Mon 2026-03-09 09:00 KST``."""
        zone = next((w.zone for w in self.windows if w.contains(at)), None)
        local = datetime.fromtimestamp(at, zone or UTC)
        return f"{local:%a %Y-%m-%d %H:%M} {local.tzname() or ''}".rstrip()

    def __str__(self) -> str:
        return ", ".join(str(w) for w in self.windows)


def parse_windows(spec: str) -> Windows:
    """Parse a window spec (see the module's doc); raise :class:`UsageError` naming what
    is wrong. The empty spec is no window."""
    if not isinstance(spec, str):
        raise UsageError(f"invalid rotation window {spec!r}: use a string ({_EXAMPLE})")
    parts = [p.strip() for p in spec.split(",")] if spec.strip() else []
    matches = []
    for part in parts:
        match = _WINDOW_RE.fullmatch(part)
        if match is None:
            raise UsageError(
                f"invalid rotation window {part or spec!r}: write [DAYS] HH:MM-HH:MM [ZONE] "
                f"({_EXAMPLE}); separate several windows with ','"
            )
        matches.append(match)
    named = {m["zone"] for m in matches if m["zone"]}
    if len(named) > 1 and any(not m["zone"] for m in matches):
        raise UsageError(
            f"invalid rotation window {spec!r}: the windows name different time zones and some "
            f"name none; give each window its zone"
        )
    default = next(iter(named), "UTC")
    windows = []
    for match in matches:
        start = _minute(match[2], match[3], spec, end=False)
        end = _minute(match[4], match[5], spec, end=True)
        if start == end:
            raise UsageError(
                f"invalid rotation window {spec!r}: it opens and closes at {_hhmm(start)}; for "
                f"a whole day write 00:00-24:00"
            )
        days = _days(match["days"], spec)
        windows.append(Window(days, start, end, _zone(match["zone"] or default, spec)))
    return Windows(tuple(windows))


def _transitions(zone: ZoneInfo, now: float) -> list[float]:
    """The instants within the horizon at which *zone*'s offset from UTC changes (daylight
    saving time): a skipped or repeated hour can open a window there."""
    out = []
    step = 86400
    for day in range(-1, _HORIZON_DAYS + 1):
        low, high = int(now) + day * step, int(now) + (day + 1) * step
        if _offset(zone, low) == _offset(zone, high):
            continue
        while high - low > 1:  # the offset changes once in a day: find the second
            middle = (low + high) // 2
            if _offset(zone, middle) == _offset(zone, low):
                low = middle
            else:
                high = middle
        out.append(float(high))
    return out


def _offset(zone: ZoneInfo, at: int) -> timedelta | None:
    return datetime.fromtimestamp(at, zone).utcoffset()


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _describe_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "daily"
    ordered = sorted(days)
    # A range may wrap the week (Fri-Mon): start where the day before is not in it.
    first = next(d for d in ordered if (d - 1) % 7 not in days)
    last = (first + len(days) - 1) % 7
    name = _DAYS[first].capitalize()
    return name if first == last else f"{name}-{_DAYS[last].capitalize()}"
