"""The retry and wait policies, on an injected clock: nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from credflip.backoff import Backoff
from credflip.errors import ConfigurationError, CredflipError, DatabaseUnavailable
from credflip.rotation.runner import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_backoff_doubles_up_to_the_cap_within_the_budget() -> None:
    clock = Clock()
    backoff = Backoff(budget=10, first=1, cap=4, clock=clock)
    delays = []
    while (delay := backoff.next_delay()) is not None:
        delays.append(delay)
        clock.sleep(delay)
    assert delays == [1, 2, 4, 3]  # the last one ends with the budget
    backoff.reset()
    assert backoff.next_delay() == 1


def failing(times: int, exc: CredflipError) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def func() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "ok"

    return calls, func


def test_retry_policy_call_waits_out_an_unavailable_database() -> None:
    clock = Clock()
    policy = RetryPolicy(Backoff(60, clock=clock))
    told: list[tuple[float, float]] = []
    calls, func = failing(2, DatabaseUnavailable("read-only"))
    value = policy.call(func, lambda _e, d, left: told.append((d, left)), clock.sleep)
    assert value == "ok" and len(calls) == 3
    assert told == [(0.5, 60.0), (1.0, 59.5)]
    assert policy.left() == 60  # reset after the success


def test_retry_policy_call_raises_other_errors_at_once() -> None:
    clock = Clock()
    policy = RetryPolicy(Backoff(60, clock=clock))
    calls, func = failing(1, ConfigurationError("no"))
    with pytest.raises(ConfigurationError):
        policy.call(func, lambda *_a: None, clock.sleep)
    assert len(calls) == 1 and clock.now == 100.0


def test_retries_end_with_the_budget_or_the_deadline_whichever_is_first() -> None:
    exc = DatabaseUnavailable("away")
    for budget, deadline, ends in ((3, None, 103.0), (60, 104.0, 104.0), (3, 110.0, 103.0)):
        clock = Clock()
        policy = RetryPolicy(Backoff(budget, clock=clock), deadline=deadline)
        with pytest.raises(DatabaseUnavailable):
            policy.call(failing(99, exc)[1], lambda *_a: None, clock.sleep)
        assert clock.now == ends


def test_only_the_deadline_ending_a_wait_for_the_database_is_a_resumable_stop() -> None:
    """A Lambda whose deadline comes while the database is away pauses (no failure, no
    step towards a halt); a spent --reconnect-timeout or another error is a failure."""
    away = DatabaseUnavailable("away")
    clock = Clock()
    policy = RetryPolicy(Backoff(60, clock=clock), deadline=104.0)
    with pytest.raises(DatabaseUnavailable):
        policy.call(failing(99, away)[1], lambda *_a: None, clock.sleep)
    assert policy.deadline_stops(away) and not policy.deadline_stops(ConfigurationError("no"))
    clock = Clock()
    spent = RetryPolicy(Backoff(3, clock=clock), deadline=110.0)
    with pytest.raises(DatabaseUnavailable):
        spent.call(failing(99, away)[1], lambda *_a: None, clock.sleep)
    assert not spent.deadline_stops(away)
    assert not RetryPolicy(Backoff(60, clock=Clock())).deadline_stops(away)
