"""The bounded wait for replicas (credflip.waiting.Wait) and verify's use of it, on a fake
clock: no server, no sleeping."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from credflip.errors import AuthenticationFailed, RotationError
from credflip.layout import Color
from credflip.rotation.phases import verify
from credflip.rotation.plan import Login
from credflip.urls import DbUrl
from credflip.waiting import Wait


class Clock:
    """A monotonic clock that moves only when something sleeps."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_wait_looks_every_interval_until_its_timeout() -> None:
    clock = Clock()
    wait = Wait(1.0, interval=0.3, clock=clock, sleep=clock.sleep)
    assert wait.left() == 1.0 and not wait.by_deadline
    pauses = 0
    while wait.pause():
        pauses += 1
    # Three full intervals, then the 0.1 s left: never past the timeout.
    assert pauses == 4 and clock.slept == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert clock.now == pytest.approx(101.0) and wait.left() == 0.0
    assert not wait.pause() and len(clock.slept) == 4  # no sleep once it is over


def test_a_deadline_before_the_timeout_ends_the_wait() -> None:
    clock = Clock()
    wait = Wait(30.0, deadline=clock.now + 0.5, interval=0.2, clock=clock, sleep=clock.sleep)
    assert wait.by_deadline and wait.until == pytest.approx(100.5)
    while wait.pause():
        pass
    assert clock.now == pytest.approx(100.5)
    # A deadline later than the timeout changes nothing.
    later = Wait(1.0, deadline=clock.now + 60, clock=clock, sleep=clock.sleep)
    assert not later.by_deadline and later.until == pytest.approx(clock.now + 1.0)


def test_notes_are_due_at_the_first_look_then_once_per_note_every() -> None:
    clock = Clock()
    wait = Wait(10.0, interval=0.5, note_every=2.0, clock=clock, sleep=clock.sleep)
    due = []
    while True:
        if wait.note_due():
            due.append(clock.now - 100.0)
        if not wait.pause():
            break
    assert due == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


class Refusing:
    """An engine whose replica refuses the new password *times* times, then accepts it."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.tries = 0

    def verify(self, url: DbUrl, *, probe: str | None = None) -> None:
        self.tries += 1
        if self.tries <= self.times:
            raise AuthenticationFailed("password authentication failed")


def context(engine: Refusing, notes: list[str]) -> Any:
    """What verify's login reads of a Context."""
    return SimpleNamespace(
        connector=engine,
        options=SimpleNamespace(probe=None),
        notice=notes.append,
        rot=SimpleNamespace(to_color=Color.GREEN, from_color=Color.BLUE),
    )


LOGIN = Login("reader URL", DbUrl.parse("postgresql://app_green:pw@replica/app"), replica=True)


def test_verify_retries_a_refusing_replica_within_the_wait() -> None:
    clock, notes = Clock(), []
    engine = Refusing(times=12)
    wait = Wait(30.0, clock=clock, sleep=clock.sleep)
    assert verify._login(context(engine, notes), LOGIN, wait=wait)
    assert engine.tries == 13 and clock.now == pytest.approx(102.4)
    # At the first refusal, then every 2 s.
    assert len(notes) == 2 and "waiting for the reader URL to accept" in notes[0]


def test_verify_fails_at_the_lag_timeout_and_stops_resumably_at_the_deadline() -> None:
    clock, notes = Clock(), []
    timeout = Wait(1.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(RotationError, match="verify failed for the green reader URL") as caught:
        verify._login(context(Refusing(times=100), notes), LOGIN, wait=timeout)
    assert "still refused after --replica-lag-timeout 1s (a replica that has not" in str(
        caught.value
    )
    assert "the same password is verified" in str(caught.value)
    assert clock.now == pytest.approx(101.0)
    deadline = Wait(30.0, deadline=clock.now + 1.0, clock=clock, sleep=clock.sleep)
    assert not verify._login(context(Refusing(times=100), notes), LOGIN, wait=deadline)
    assert clock.now == pytest.approx(102.0)
    # The writer (no wait) is never retried, nor said to lag.
    with pytest.raises(RotationError, match="fix the cause"):
        verify._login(context(Refusing(times=1), notes), LOGIN, wait=None)
