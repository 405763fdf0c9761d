"""How long a phase keeps trying while the database is unavailable.

A restart takes seconds and an Aurora failover about half a minute. A rotation
that loses its connection in the middle of a phase waits and runs the phase
again (every phase is safe to repeat) instead of stopping, until the budget
(``--reconnect-timeout``) or the caller's deadline (a Lambda's time) runs out.
A wait for a replica to replay is :class:`credflip.waiting.Wait`.
The clock is injected, so the policy is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Exponential delays (``first``, doubling up to ``cap``) within ``budget`` seconds.

    The budget counts from the first failure since the last :meth:`reset`.
    """

    budget: float
    first: float = 0.5
    cap: float = 5.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _since: float | None = field(default=None, repr=False)
    _delay: float = field(default=0.0, repr=False)

    def next_delay(self, *, deadline: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None when it is time to give up.

        A delay never runs past the budget or *deadline* (a monotonic instant).
        """
        now = self.clock()
        if self._since is None:
            self._since, self._delay = now, self.first
        else:
            self._delay = min(self.cap, self._delay * 2)
        left = self.left(now)
        if deadline is not None:
            left = min(left, deadline - now)
        if left <= 0:
            return None
        return min(self._delay, left)

    def left(self, now: float | None = None) -> float:
        """Seconds of the budget not yet spent."""
        if self._since is None:
            return self.budget
        return self._since + self.budget - (self.clock() if now is None else now)

    def reset(self) -> None:
        """A try succeeded: the next failure starts a fresh budget."""
        self._since = None
