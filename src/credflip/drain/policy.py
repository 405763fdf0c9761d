"""How long a drain waits: the quiet window and its arithmetic over the options.

**The window the pauses call for.** After the cache wait, every use of the old
user comes from a client that does not follow the pointer. The drain measures
the pauses between two such uses (both after the cache wait, with a quiet
sample between them) and lengthens the window from them, in one of two ways:

- *a periodic client* (a cron job): ``gap_factor`` (2) times the longest
  pause, which its next pause does not reach while it keeps its period;
- *a client arriving at random* (a Poisson process: exponential pauses):
  ``k`` mean pauses, so long that its next pause exceeds it only with a small
  share of ``miss_odds`` (:func:`random_client_factor`).

Which one is decided by how alike the pauses are. *n* exponential pauses lie
within a factor ``1 + s`` of each other (longest <= (1 + s) x shortest) with
probability ``(n/s) B(n/s, n)`` (:func:`random_like`: the shortest is
Exp(n), and by memorylessness the other n - 1 exceed it by independent
Exp(1) pauses). Pauses that alike are taken for a periodic client only when
this probability is below the drain's share at *n* pauses,
``miss_odds / (n (n - 1))``; otherwise the client may be random and gets the
random window as well. The shares sum to ``miss_odds`` over n = 2, 3, ...,
so by the union bound, over a whole drain however long, a client arriving at
random is taken for a periodic one with odds <= ``miss_odds``, and outlasts
the random window at some pause with odds <= ``miss_odds``: **cut off with
odds <= 2 x miss_odds = 0.2 %** once the drain has seen two of its pauses.
Before that only the window protects it: a client with a mean pause of *m*
outlasts a window *w* with odds e^(-w/m) per gap (e^-8, 1 in 3000, for the
default window and a mean of 5 TTLs). So once a use after the cache wait has
shown such a client, the window is :data:`LEGACY_WINDOWS` (2) windows until
two of its pauses are known (e^-16 there). What is left is a client whose
first use after the cache wait comes more than a window later: nothing tells
it from no client. On the fake clock (600 s drains, TTL 1 s, default window:
tests/test_drain_pauses.py with CREDFLIP_DRAIN_SEEDS): a client at 0.2/s,
20000 seeds, is cut off in 8 (all unseen after the cache wait: e^-8 x 20000 =
7); with one window after a first use, 17; with the per-pause factor used
before (odds 1e-3 at *every* pause, growing with the drain's length), 322. At
0.1/s (a mean pause of a quarter window), 5000 seeds: 86 (e^-4 x 5000 = 92),
against 259 with one window.

What a periodic client gets: pauses alike within 0.1 % after 2 pauses, 2.8 %
after 3, 10 % after 4, 21 % after 5, 2x after 10 (:meth:`DrainPolicy.regular`).
An hourly job seen 3 times (two pauses of an hour, within 3.6 s of each other)
or 4 times (three, within 100 s), then fixed: the window is 2 h after its last
use (the random window would be 87 or 52 hours; before, 61 or 27). A job every 10 minutes seen 3
times: the default 40 minutes (twice 10 minutes is less).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..layout import TTL_JITTER

#: The default quiet window, in client TTLs. Ten TTLs let a client arriving
#: at random with a mean pause of 5 TTLs through in 4 drains out of 10
#: (bench/drain_detection.py); forty make that 1 in 3000.
QUIET_TTLS = 40.0
#: Once a use after the cache wait showed a client that does not follow the pointer,
#: the window is this many times longer until two of its pauses tell its rhythm.
LEGACY_WINDOWS = 2.0
#: A default ``--drain-timeout`` gives the shortest possible drain this long.
TIMEOUT_SLACK = 900.0
#: Two readings of a server's start time this far apart mean it restarted.
RESTART_TOLERANCE = 5.0


def share(pauses: int, odds: float) -> float:
    """The part of *odds* a drain spends at *pauses* pauses: odds / (n (n - 1)), summing
    to *odds* over n = 2, 3, ..."""
    return odds / (pauses * (pauses - 1)) if pauses >= 2 else 0.0


def random_client_factor(pauses: int, odds: float) -> float:
    """How many mean pauses a window must last so a random client is missed with *odds*
    over the whole drain (its share at *pauses*, :func:`share`, at this pause).

    With the mean of n exponential pauses, P(next pause > k x mean) = (1 + k/n)^-n,
    which is the share for k = n ((n (n - 1) / odds)^(1/n) - 1): 87 after 2
    pauses, 31 after 5, 18 after 20, about ln(n^2 / odds) beyond (17.5 at 100).
    """
    if pauses < 2:
        return math.inf
    return float(pauses * (share(pauses, odds) ** (-1.0 / pauses) - 1.0))


def random_like(pauses: int, spread: float) -> float:
    """The odds that *pauses* pauses of a client arriving at random lie within a factor
    ``1 + spread`` of each other: (n/s) B(n/s, n) (see the module's docstring)."""
    if pauses < 2:
        return 1.0
    if spread <= 0.0:
        return 0.0
    a = pauses / spread
    return math.exp(math.log(a) + math.lgamma(a) + math.lgamma(pauses) - math.lgamma(a + pauses))


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
    #: The odds budget of each way a client arriving at random could be cut off: taken
    #: for a periodic one, or outlasting the random window (see above).
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

    def regular(self, pauses: int, longest_gap: float, shortest: float) -> bool:
        """Whether *pauses* pauses from *shortest* to *longest_gap* are too alike to come
        from a client arriving at random (odds below the drain's share at *pauses*)."""
        if pauses < 2 or shortest <= 0.0:
            return False
        spread = max(0.0, longest_gap / shortest - 1.0)
        return random_like(pauses, spread) <= share(pauses, self.miss_odds)

    def needed_quiet(
        self,
        longest_gap: float,
        pauses: int = 0,
        pause_sum: float = 0.0,
        shortest: float = 0.0,
        *,
        legacy: bool = False,
    ) -> float:
        """The quiet window, given the pauses seen between two uses (*shortest*: the
        shortest of them; 0, unknown, takes the client for a random one). *legacy*: a use
        after the cache wait was seen, a client that does not follow the pointer; until
        two of its pauses are known, the window is :data:`LEGACY_WINDOWS` times longer."""
        needed = max(self.window, self.gap_factor * longest_gap)
        if legacy and pauses < 2:
            needed = max(needed, LEGACY_WINDOWS * self.window)
        if pauses >= 2 and not self.regular(pauses, longest_gap, shortest):
            needed = max(needed, pause_sum / pauses * random_client_factor(pauses, self.miss_odds))
        return needed

    def earliest_done(
        self,
        switched_at: float,
        longest_gap: float = 0.0,
        pauses: int = 0,
        pause_sum: float = 0.0,
        shortest: float = 0.0,
        *,
        legacy: bool = False,
    ) -> float:
        """The earliest instant the drain can finish, if nothing uses the old user."""
        quiet = self.needed_quiet(longest_gap, pauses, pause_sum, shortest, legacy=legacy)
        return switched_at + max(self.cache_wait + quiet, self.min_drain)
