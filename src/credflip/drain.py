"""The drain as a pure tracker: readings and a clock in, a decision out.

After the switch, well-behaved clients move to the new color within one
cache TTL (plus jitter). The drain then waits until the old user shows **no
use** for a quiet window, on every instance, before it may be retired. *Use*
in one sample is any of:

- an open session of the old user on some instance;
- a change of a cumulative per-user signal (a login or statement counter)
  since the previous sample of that instance: a client that connected and
  left between two samples still moved the counter. A counter that went
  *down* (a reset, an eviction) changed too, so it counts as use, never as
  quiet.

Some samples cannot be trusted either way (*unknown*): an instance that could
not be reached, a counter seen for the first time (nothing to compare it
with), a standby that has not yet replayed the change that makes the old
user's logins countable. Unknown restarts the quiet window like use does.

The quiet window is at least one client TTL. When the drain sees a client
come back after a pause (a periodic job, a legacy client that resolved its
URL once), it lengthens the window to ``gap_factor`` times the longest pause
it saw between two uses since the switch, so that such a client is not
retired in its next pause. ``min_drain`` is a floor on the whole drain, for
fleets whose old clients only re-read at restart (Lambdas that read at cold
start): it also gives the tracker time to see two uses of a periodic client.

Nothing here touches a database, a store or the real clock: the rotation
feeds it samples with ``time.monotonic()`` and acts on the verdict, and the
unit tests feed it a fake clock.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from .engines.base import Sessions
from .layout import TTL_JITTER

__all__ = ["DrainPolicy", "DrainStatus", "DrainTracker", "Reading", "Verdict"]


class Verdict(enum.StrEnum):
    """What the drain should do after a sample."""

    #: Clients may still hold the old pointer in their cache: keep waiting.
    CACHES = "caches"
    #: The old user was used (or could not be observed) since the last sample.
    IN_USE = "in_use"
    #: No use: the quiet window is running.
    QUIET = "quiet"
    #: Quiet long enough and past ``min_drain``: the old user may be retired.
    DONE = "done"
    #: The drain's time ran out while the old user was still in use.
    TIMEOUT = "timeout"


@dataclass(frozen=True, kw_only=True)
class DrainPolicy:
    """How long a drain waits; pure arithmetic over the options."""

    #: The clients' cache TTL.
    client_ttl: float
    #: Never retire sooner than this after the switch.
    min_drain: float = 0.0
    #: Clients cache for up to ``ttl * (1 + jitter)``.
    jitter: float = TTL_JITTER
    #: The quiet window is at least this many times the longest pause seen.
    gap_factor: float = 2.0

    @property
    def cache_wait(self) -> float:
        """Seconds after the switch until every well-behaved client re-read the pointer."""
        return self.client_ttl * (1 + self.jitter)

    def needed_quiet(self, longest_gap: float) -> float:
        """The quiet window, given the longest pause seen between two uses."""
        return max(self.client_ttl, self.gap_factor * longest_gap)

    def earliest_done(self, switched_at: float, longest_gap: float = 0.0) -> float:
        """The earliest instant the drain can finish, if nothing uses the old user."""
        return switched_at + max(self.cache_wait + self.needed_quiet(longest_gap), self.min_drain)


@dataclass(frozen=True)
class Reading:
    """What one instance showed in one sample."""

    #: ``host:port`` of the instance.
    instance: str
    #: The old user's open sessions there; None when they could not be read.
    sessions: Sessions | None = None
    #: Fingerprints of the cumulative signals that are valid there now, by name.
    counters: Mapping[str, Hashable] = field(default_factory=dict)
    #: Why the counters cannot be trusted yet (a standby still replaying).
    pending: str | None = None
    #: Why the instance could not be read at all.
    error: str | None = None
    #: The old user's statements as counted there: ``(query text, calls)``.
    statements: tuple[tuple[str, int], ...] = ()
    #: Wall-clock time the server (re)started; None when unknown.
    started: float | None = None


@dataclass(frozen=True)
class DrainStatus:
    """The tracker's view after one sample."""

    verdict: Verdict
    #: Seconds since the switch.
    waited: float
    #: Seconds until every client's cache expired (0 once it did).
    caches_in: float
    #: Seconds of the current quiet window so far.
    quiet: float
    #: Seconds of quiet the drain needs.
    needed_quiet: float
    #: Seconds until the drain could finish at the earliest (0 when it could now).
    done_in: float
    #: Seconds until the timeout.
    timeout_in: float
    #: Open sessions of the old user over all instances.
    sessions: int
    #: What counted as use or unknown in this sample, one phrase each.
    reasons: tuple[str, ...]
    #: The longest pause seen between two uses since the switch.
    longest_gap: float


class DrainTracker:
    """Feed it samples; it says whether the old user may be retired.

    *switched_at* and *timeout_at* are instants on the caller's monotonic
    clock. *longest_gap* carries what an earlier run of the same drain
    learned, so a resumed drain does not forget a periodic client.
    """

    def __init__(
        self,
        policy: DrainPolicy,
        *,
        switched_at: float,
        timeout_at: float,
        longest_gap: float = 0.0,
    ) -> None:
        self.policy = policy
        self.switched_at = switched_at
        self.timeout_at = timeout_at
        self.longest_gap = longest_gap
        self._counters: dict[tuple[str, str], Hashable] = {}
        self._quiet_since: float | None = None
        self._last_use: float | None = None

    def observe(self, now: float, readings: Sequence[Reading]) -> DrainStatus:
        """Take one sample (all instances, read at about *now*); return the verdict."""
        used, unknown = self._compare(readings)
        if used:
            if self._last_use is not None:
                self.longest_gap = max(self.longest_gap, now - self._last_use)
            self._last_use = now
        policy = self.policy
        caches_expired = now - self.switched_at >= policy.cache_wait
        if caches_expired:
            if used or unknown:
                self._quiet_since = None
            elif self._quiet_since is None:
                self._quiet_since = now
        quiet = 0.0 if self._quiet_since is None else now - self._quiet_since
        needed = policy.needed_quiet(self.longest_gap)
        # The quiet window started, or starts at the next clean sample.
        window_from = (
            self._quiet_since
            if self._quiet_since is not None
            else max(now, self.switched_at + policy.cache_wait)
        )
        earliest = max(self.switched_at + policy.min_drain, window_from + needed)
        if self._quiet_since is not None and now >= earliest:
            verdict = Verdict.DONE
        elif now >= self.timeout_at:
            verdict = Verdict.TIMEOUT
        elif not caches_expired:
            verdict = Verdict.CACHES
        elif used or unknown:
            verdict = Verdict.IN_USE
        else:
            verdict = Verdict.QUIET
        return DrainStatus(
            verdict=verdict,
            waited=now - self.switched_at,
            caches_in=max(0.0, self.switched_at + policy.cache_wait - now),
            quiet=quiet,
            needed_quiet=needed,
            done_in=max(0.0, earliest - now),
            timeout_in=max(0.0, self.timeout_at - now),
            sessions=sum(r.sessions.count for r in readings if r.sessions is not None),
            reasons=tuple(used + unknown),
            longest_gap=self.longest_gap,
        )

    def _compare(self, readings: Sequence[Reading]) -> tuple[list[str], list[str]]:
        """Phrases for what was used and what could not be observed in this sample."""
        used: list[str] = []
        unknown: list[str] = []
        seen: set[tuple[str, str]] = set()
        for reading in readings:
            where = reading.instance
            if reading.error is not None or reading.sessions is None:
                unknown.append(f"{where} unreachable: {reading.error or 'no answer'}")
                continue
            if reading.sessions.count:
                used.append(
                    f"{reading.sessions.count} session(s) on {where} "
                    f"({reading.sessions.describe()})"
                )
            if reading.pending is not None:
                unknown.append(f"{where}: {reading.pending}")
                continue
            for name, value in reading.counters.items():
                key = (where, name)
                seen.add(key)
                if key not in self._counters:
                    unknown.append(f"{where}: {name} has no earlier sample to compare with")
                elif self._counters[key] != value:
                    used.append(f"{name} changed on {where}")
                self._counters[key] = value
        # A counter that vanished (instance gone, signal lost) has no baseline
        # when it comes back.
        for key in set(self._counters) - seen:
            del self._counters[key]
        return used, unknown
