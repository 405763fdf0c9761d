"""The drain as a pure tracker: readings and a clock in, a decision out.

After the switch, well-behaved clients move to the new color within one
cache TTL (plus jitter). The drain then waits until the old user shows **no
use** on every instance for the *quiet window*, before it may be retired.
*Use* in one sample is any of:

- an open session of the old user on some instance (with ``terminate``, a
  session idle for longer than the window is *held*, not used: it is ended
  when the drain finishes);
- a change of a cumulative per-user signal (a login or statement counter)
  since the previous sample of that instance: a client that connected and
  left between two samples still moved the counter. A counter that went
  *down* (a reset, an eviction) changed too, so it counts as use, never as
  quiet; so does a server that restarted since the previous sample.

Some samples cannot be trusted either way (*unknown*): an instance that could
not be reached, a counter seen for the first time (nothing to compare it
with), a standby that has not yet replayed the change that makes the old
user's logins countable. Unknown restarts the quiet window like use does.

The quiet window (``quiet``, default :data:`QUIET_TTLS` client TTLs) is the
one rule a user can check: *a client that uses the old user at least once
per window is never cut off*. On top of it the drain lengthens the window
from what it saw: to ``gap_factor`` times the longest pause between two
uses (a periodic job), and to the pause length a client arriving at random
with the observed mean pause exceeds only with odds ``miss_odds``
(:func:`random_client_factor`). ``min_drain`` is a floor on the whole drain.

The evidence (each instance's last counter fingerprint and start time, when
the quiet began, the pauses seen) is :class:`Evidence`: the rotation keeps
it in its state, so that a later run (a second ``rotate``, the next scheduled
invocation) continues the same window instead of starting blind; a
cumulative counter compared across the time between two runs tells whether
anyone used the user meanwhile.

Nothing here touches a database, a store or the real clock: the rotation
feeds it samples with ``time.monotonic()`` and acts on the verdict, and the
unit tests feed it a fake clock.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engines.base import SessionGroup, Sessions
from .layout import TTL_JITTER

__all__ = [
    "QUIET_TTLS",
    "DrainPolicy",
    "DrainStatus",
    "DrainTracker",
    "Evidence",
    "Reading",
    "Verdict",
    "random_client_factor",
]

#: The default quiet window, in client TTLs. Ten TTLs let a client arriving
#: at random with a mean pause of 5 TTLs through in 4 drains out of 10
#: (bench/drain_detection.py); forty make that 1 in 3000.
QUIET_TTLS = 40.0
#: A default ``--drain-timeout`` gives the shortest possible drain this long.
TIMEOUT_SLACK = 900.0
#: Two readings of a server's start time this far apart mean it restarted.
RESTART_TOLERANCE = 5.0


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
    #: Past the drain timeout and the old user is still in use (or this run's
    #: own time is up).
    TIMEOUT = "timeout"


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


def _digest(value: Hashable) -> str:
    """A short, stable fingerprint of a counter's value (kept in the state)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


@dataclass
class Evidence:
    """What a drain learned, kept in the state between runs (all times wall-clock).

    ``counters`` maps an instance to the digest of all its counters at the
    last sample, ``started`` to its server's start time then.
    """

    user: str = ""
    counters: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    quiet_since: float | None = None
    last_use: float | None = None
    longest_gap: float = 0.0
    pauses: int = 0
    pause_sum: float = 0.0
    sampled_at: float | None = None
    #: The primary's write position when the watch began (PostgreSQL LSN):
    #: standbys count the old user's logins once they replayed it.
    position: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON: the record must fit 4 KB with 16 instances."""
        out: dict[str, Any] = {
            "user": self.user,
            "i": {k: [v, round(self.started.get(k, 0.0))] for k, v in self.counters.items()},
            "gap": round(self.longest_gap, 2),
            "n": self.pauses,
            "sum": round(self.pause_sum, 2),
        }
        for key, value in (("q", self.quiet_since), ("u", self.last_use), ("at", self.sampled_at)):
            if value is not None:
                out[key] = round(value, 2)
        if self.position is not None:
            out["p"] = self.position
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """The inverse of :meth:`to_dict`; an empty or damaged record is no evidence."""
        try:
            items = dict(data.get("i") or {})
            return cls(
                user=str(data.get("user") or ""),
                counters={str(k): str(v[0]) for k, v in items.items()},
                started={str(k): float(v[1]) for k, v in items.items() if v[1]},
                quiet_since=None if data.get("q") is None else float(data["q"]),
                last_use=None if data.get("u") is None else float(data["u"]),
                longest_gap=float(data.get("gap") or 0.0),
                pauses=int(data.get("n") or 0),
                pause_sum=float(data.get("sum") or 0.0),
                sampled_at=None if data.get("at") is None else float(data["at"]),
                position=None if data.get("p") is None else str(data["p"]),
            )
        except (TypeError, ValueError, IndexError, AttributeError):
            return cls()


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
    #: Seconds until the timeout (0 once past it).
    timeout_in: float
    #: Open sessions of the old user over all instances.
    sessions: int
    #: What counted as use or unknown in this sample, one phrase each.
    reasons: tuple[str, ...]
    #: The longest pause seen between two uses since the switch.
    longest_gap: float
    #: Sessions idle for longer than the window, ended at the finish (``terminate``).
    held: int = 0


class DrainTracker:
    """Feed it samples; it says whether the old user may be retired.

    *switched_at* and *timeout_at* are instants on the caller's monotonic
    clock: past *timeout_at* (counted from the switch) a sample that shows use,
    or an instance that cannot be read or trusted, ends the run with TIMEOUT;
    a quiet drain past the timeout goes on, so that a run started after the
    clients left finishes, but not past *run_until* (this run's own end, None
    for none): the evidence carries the window on into the next run. *evidence* is what
    an earlier run of the same drain learned (wall-clock); *offset* is
    ``time.time() - time.monotonic()`` to translate it.
    """

    def __init__(
        self,
        policy: DrainPolicy,
        *,
        switched_at: float,
        timeout_at: float,
        run_until: float | None = None,
        evidence: Evidence | None = None,
        offset: float = 0.0,
        terminate: bool = False,
        sessions_only: bool = False,
    ) -> None:
        self.policy = policy
        self.sessions_only = sessions_only
        #: Instances whose counters this drain has read: losing them is not quiet.
        self._counted: set[str] = set()
        self._pending_since: dict[str, float] = {}
        self.switched_at = switched_at
        self.timeout_at = timeout_at
        self.run_until = run_until
        self.offset = offset
        self.terminate = terminate
        self._counters: dict[tuple[str, str], str] = {}
        self._started: dict[str, float] = {}
        self._quiet_since: float | None = None
        self._last_use: float | None = None
        self._last_sample: float | None = None
        self._used_before = False
        self.longest_gap = 0.0
        self.pauses = 0
        self.pause_sum = 0.0
        # From an earlier run: each instance's digest of all its counters.
        self._restored: dict[str, str] = {}
        self._restored_quiet: float | None = None
        if evidence is not None:
            self.longest_gap = evidence.longest_gap
            self.pauses, self.pause_sum = evidence.pauses, evidence.pause_sum
            # Not the last use: a pause measured across the time between two runs
            # would be the operator's schedule, not a client's.
            self._restored = dict(evidence.counters)
            self._counted = set(evidence.counters)
            self._started = dict(evidence.started)
            if evidence.quiet_since is not None:
                self._restored_quiet = evidence.quiet_since - offset

    # -- the evidence kept between runs ------------------------------------

    def evidence(self, user: str, position: str | None = None) -> Evidence:
        """What this drain knows now, in wall-clock time, for the state."""
        by_instance: dict[str, list[tuple[str, str]]] = {}
        for (where, name), digest in sorted(self._counters.items()):
            by_instance.setdefault(where, []).append((name, digest))
        counters = {k: _digest(tuple(v)) for k, v in by_instance.items()}
        # An instance not sampled again in this run keeps its earlier digest.
        for where, digest in self._restored.items():
            counters.setdefault(where, digest)

        def wall(t: float | None) -> float | None:
            return None if t is None else t + self.offset

        return Evidence(
            user=user,
            counters=counters,
            started={k: v for k, v in self._started.items() if k in counters},
            quiet_since=wall(self._quiet_since),
            last_use=wall(self._last_use),
            longest_gap=self.longest_gap,
            pauses=self.pauses,
            pause_sum=self.pause_sum,
            sampled_at=wall(self._last_sample),
            position=position,
        )

    # -- one sample ---------------------------------------------------------

    def observe(self, now: float, readings: Sequence[Reading]) -> DrainStatus:
        """Take one sample (all instances, read at about *now*); return the verdict."""
        policy = self.policy
        self._last_sample = now
        needed = policy.needed_quiet(self.longest_gap, self.pauses, self.pause_sum)
        sample = self._compare(now, readings, needed)
        used, unknown = sample.used, sample.unknown
        caches_expired = now - self.switched_at >= policy.cache_wait
        if used:
            if self._last_use is not None:
                pause = now - self._last_use
                self.longest_gap = max(self.longest_gap, pause)
                # A pause is time with a quiet sample in it: uses in consecutive
                # samples are one busy stretch, not a client that came back.
                if caches_expired and not self._used_before:
                    self.pauses += 1
                    self.pause_sum += pause
            self._last_use = now
        elif sample.earlier:
            # Used at some unknown moment since the last run: no pause to learn.
            self._last_use = None
        self._used_before = bool(used)
        if used or sample.earlier or not sample.vouched:
            # The window an earlier run began holds only while every instance
            # compared its counters with the ones that run kept, unchanged.
            self._restored_quiet = None
        if caches_expired:
            if used or unknown or sample.earlier:
                self._quiet_since = None
            elif self._quiet_since is None:
                restored = self._restored_quiet
                self._quiet_since = now if restored is None else min(now, restored)
        if not sample.waiting:
            # Every instance compared: the restored window was taken or dropped.
            self._restored_quiet = None
        used = used + sample.earlier
        quiet = 0.0 if self._quiet_since is None else now - self._quiet_since
        needed = policy.needed_quiet(self.longest_gap, self.pauses, self.pause_sum)
        # The quiet window started, or starts at the next clean sample.
        window_from = (
            self._quiet_since
            if self._quiet_since is not None
            else max(now, self.switched_at + policy.cache_wait)
        )
        earliest = max(self.switched_at + policy.min_drain, window_from + needed)
        past_timeout = now >= self.timeout_at
        if self._quiet_since is not None and now >= earliest:
            verdict = Verdict.DONE
        elif past_timeout and (
            sample.blocked or (self.run_until is not None and now >= self.run_until)
        ):
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
            held=sample.held,
        )

    def _held(self, group: SessionGroup, needed: float) -> bool:
        """With ``terminate``: sessions idle for the whole window are held, not used."""
        return self.terminate and group.idle_for is not None and group.idle_for >= needed

    def _compare(self, now: float, readings: Sequence[Reading], needed: float) -> _Sample:
        """What one sample shows, instance by instance."""
        out = _Sample()
        seen: set[tuple[str, str]] = set()
        for reading in readings:
            where = reading.instance
            if reading.error is not None or reading.sessions is None:
                out.unknown.append(f"{where} unreachable: {reading.error or 'no answer'}")
                out.blocked = True
                out.vouched = False
                continue
            active = Sessions(
                tuple(g for g in reading.sessions.groups if not self._held(g, needed))
            )
            out.held += reading.sessions.count - active.count
            if active.count:
                out.used.append(f"{active.count} session(s) on {where} ({active.describe()})")
            if reading.started is not None:
                before = self._started.get(where)
                self._started[where] = reading.started
                if before is not None and abs(before - reading.started) > RESTART_TOLERANCE:
                    out.used.append(f"{where} restarted since the last sample")
                    self._restored.pop(where, None)
            if reading.pending is not None:
                out.unknown.append(f"{where}: {reading.pending}")
                since = self._pending_since.setdefault(where, now)
                out.blocked |= now - since >= self.policy.pending_grace
                out.waiting = True
                continue
            self._pending_since.pop(where, None)
            digests = {name: _digest(value) for name, value in reading.counters.items()}
            restored = self._restored.pop(where, None)
            if not digests:
                out.vouched = False
                if where in self._counted and not self.sessions_only:
                    # userstat off again after a restart, an extension dropped: the
                    # drain would be blind to short logins there.
                    out.unknown.append(f"{where}: its login counter is gone")
                continue
            self._counted.add(where)
            if restored is not None:
                # The first sample of this run against the last one of an earlier run.
                if _digest(tuple(sorted(digests.items()))) != restored:
                    out.earlier.append(f"the counters on {where} changed since the last run")
                for name, digest in digests.items():
                    self._counters[(where, name)] = digest
                    seen.add((where, name))
                continue
            for name, digest in digests.items():
                key = (where, name)
                out.vouched &= key in self._counters
                seen.add(key)
                if key not in self._counters:
                    out.unknown.append(f"{where}: {name} has no earlier sample to compare with")
                elif self._counters[key] != digest:
                    out.used.append(f"{name} changed on {where}")
                self._counters[key] = digest
        # A counter that vanished (instance gone, signal lost) has no baseline
        # when it comes back.
        for key in set(self._counters) - seen:
            if not any(r.instance == key[0] and r.pending is not None for r in readings):
                del self._counters[key]
        out.blocked |= bool(out.used)
        return out


@dataclass
class _Sample:
    """What :meth:`DrainTracker._compare` found in one sample."""

    used: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: Uses between the last run and this one (a counter that moved meanwhile).
    earlier: list[str] = field(default_factory=list)
    #: Sessions idle for the whole window (``terminate``).
    held: int = 0
    #: Every instance compared its counters with the ones an earlier run kept.
    vouched: bool = True
    #: Some instance could not be compared yet (a standby still replaying).
    waiting: bool = False
    #: Past the timeout, this sample ends the run.
    blocked: bool = False
