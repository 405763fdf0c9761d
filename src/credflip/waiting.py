"""Waiting, bounded, for something that comes in its own time: a replica replaying a change.

A :class:`Wait` begins when it is made. Each time its owner finds the thing
not there yet, :meth:`Wait.pause` sleeps until the next look, or says that
the time is up: ``timeout`` after the start, or the caller's ``deadline`` (a
monotonic instant: the Lambda's remaining time), whichever comes first.
:meth:`Wait.note_due` says when to tell the operator what is waited for. The
clock and the sleep are injected, so the policy is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Wait"]


@dataclass
class Wait:
    """Looks every ``interval`` seconds until ``timeout`` or ``deadline``; a note every
    ``note_every`` seconds."""

    timeout: float
    #: A ``time.monotonic()`` instant the wait never runs past (None: only the timeout).
    deadline: float | None = None
    interval: float = 0.2
    note_every: float = 2.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    started: float = field(init=False)
    _noted: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def until(self) -> float:
        """The instant the wait gives up."""
        end = self.started + self.timeout
        return end if self.deadline is None else min(end, self.deadline)

    @property
    def by_deadline(self) -> bool:
        """True when the caller's deadline, not the timeout, ends the wait."""
        return self.deadline is not None and self.deadline < self.started + self.timeout

    def left(self) -> float:
        """Seconds until the wait gives up (0 once it has)."""
        return max(0.0, self.until - self.clock())

    def note_due(self) -> bool:
        """True the first time it is asked, then at most once per ``note_every`` seconds."""
        now = self.clock()
        if self._noted is not None and now - self._noted < self.note_every:
            return False
        self._noted = now
        return True

    def pause(self) -> bool:
        """Sleep until the next look and return True; False at once when the time is up."""
        left = self.left()
        if left <= 0:
            return False
        self.sleep(min(self.interval, left))
        return True
