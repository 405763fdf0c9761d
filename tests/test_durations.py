"""Durations as operators write them."""

from __future__ import annotations

import pytest

from credflip.durations import format_duration, parse_duration
from credflip.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("0s", 0),
        ("1.5s", 1.5),
        (" 2M ", 120),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["60", "", "abc", "5 s", "-5s", "1w", "s"])
def test_refused(text: str) -> None:
    with pytest.raises(UsageError, match="write a number with a unit"):
        parse_duration(text, what="--client-ttl")


def test_format() -> None:
    assert [format_duration(s) for s in (0.25, 12.34, 245, 3720)] == [
        "250ms",
        "12.3s",
        "4m05s",
        "1h02m",
    ]
