"""How long a drain waits: the quiet window and its arithmetic over the options."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..layout import TTL_JITTER

#: The default quiet window, in client TTLs. Ten TTLs let a client arriving
#: at random with a mean pause of 5 TTLs through in 4 drains out of 10
#: (bench/drain_detection.py); forty make that 1 in 3000.
QUIET_TTLS = 40.0
#: A default ``--drain-timeout`` gives the shortest possible drain this long.
TIMEOUT_SLACK = 900.0
#: Two readings of a server's start time this far apart mean it restarted.
RESTART_TOLERANCE = 5.0


def random_client_factor(pauses: int, odds: float) -> float:
    """How many mean pauses a window must last so a random client is missed with *odds*.

    A client arriving at random (a Poisson process) has exponential pauses;
    their mean is only estimated from *pauses* observed ones, so the
    estimate's own spread counts: with the mean of n exponential pauses,
    P(next pause > k x mean) = (1 + k/n)^-n, which is *odds* for
    k = n (odds^(-1/n) - 1): 61 after 2 pauses, 15 after 5, 8 after 20,
    ln(1/odds) = 6.9 in the limit.
    """
    if pauses < 1:
        return math.inf
    return float(pauses * (odds ** (-1.0 / pauses) - 1.0))


@dataclass(frozen=True, kw_only=True)
class DrainPolicy:
    """How long a drain waits; pure arithmetic over the options."""

    #: The clients' cache TTL.
    client_ttl: float
    #: The quiet window; None: :data:`QUIET_TTLS` x ``client_ttl``.
    quiet: float | None = None
    #: Never retire sooner than this after the switch.
    min_drain: float = 0.0
    #: Clients cache for up to ``ttl * (1 + jitter)``.
    jitter: float = TTL_JITTER
    #: The quiet window is at least this many times the longest pause seen.
    gap_factor: float = 2.0
    #: The odds that a client arriving at random is cut off (see above).
    miss_odds: float = 1e-3
    #: Past the timeout, a standby still replaying ends a run only after this long.
    pending_grace: float = 30.0

    @property
    def window(self) -> float:
        """The quiet window before anything was seen."""
        return QUIET_TTLS * self.client_ttl if self.quiet is None else self.quiet

    @property
    def cache_wait(self) -> float:
        """Seconds after the switch until every well-behaved client re-read the pointer."""
        return self.client_ttl * (1 + self.jitter)

    @property
    def shortest(self) -> float:
        """The shortest possible drain, from the switch, when nothing uses the old user."""
        return max(self.cache_wait + self.window, self.min_drain)

    @property
    def default_timeout(self) -> float:
        """``--drain-timeout`` when none is given: the shortest drain plus 15 minutes."""
        return self.shortest + TIMEOUT_SLACK

    def needed_quiet(self, longest_gap: float, pauses: int = 0, pause_sum: float = 0.0) -> float:
        """The quiet window, given the pauses seen between two uses."""
        needed = max(self.window, self.gap_factor * longest_gap)
        if pauses >= 2:
            needed = max(needed, pause_sum / pauses * random_client_factor(pauses, self.miss_odds))
        return needed

    def earliest_done(
        self, switched_at: float, longest_gap: float = 0.0, pauses: int = 0, pause_sum: float = 0.0
    ) -> float:
        """The earliest instant the drain can finish, if nothing uses the old user."""
        quiet = self.needed_quiet(longest_gap, pauses, pause_sum)
        return switched_at + max(self.cache_wait + quiet, self.min_drain)
