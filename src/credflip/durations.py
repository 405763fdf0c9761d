"""Durations as operators write them: ``500ms``, ``90s``, ``15m``, ``1h``, ``1h30m``, ``30d``;
instants as machines read them (:func:`iso_utc`)."""

from __future__ import annotations

import re
import time

from .errors import UsageError

__all__ = ["format_duration", "iso_utc", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Return the number of seconds *text* stands for.

    A unit is required: a bare ``60`` is refused rather than guessed.
    """
    cleaned = text.strip().lower() if isinstance(text, str) else ""
    if not _WHOLE_RE.fullmatch(cleaned):
        raise UsageError(
            f"invalid {what} {text!r}: write a number with a unit, e.g. 500ms, 90s, 15m or 1h"
        )
    return sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(cleaned))


def format_duration(seconds: float) -> str:
    """Render *seconds* compactly: ``850ms``, ``12.3s``, ``4m05s``, ``1h02m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def iso_utc(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC, ``2026-03-09T01:10:00Z`` (None stays None)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
