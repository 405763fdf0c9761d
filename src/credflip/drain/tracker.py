"""The drain tracker: samples and a clock in, a verdict on the old user out."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .evidence import Evidence
from .policy import DrainPolicy
from .sample import Baseline, Sample
from .values import DrainStatus, Reading, Verdict
from .window import QuietWindow


class DrainTracker:
    """Feed it samples; it says whether the old user may be retired.

    *switched_at* and *timeout_at* are instants on the caller's monotonic
    clock: past *timeout_at* (counted from the switch) a sample that shows use,
    or an instance that cannot be read or trusted, ends the run with TIMEOUT;
    a quiet drain past the timeout goes on, so that a run started after the
    clients left finishes, but not past *run_until* (this run's own end, None
    for none): the evidence carries the window on into the next run. A use
    since the last run, past the timeout, lets the run go on (it may finish),
    but a run that ends unfinished reports it (:attr:`DrainStatus.used_late`).
    *evidence* is what an earlier run learned (wall-clock), *offset* is
    ``time.time() - time.monotonic()``.
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
        proxied: bool = False,
    ) -> None:
        self.policy = policy
        self.switched_at = switched_at
        self.timeout_at = timeout_at
        self.run_until = run_until
        self.offset = offset
        rules = {"terminate": terminate, "sessions_only": sessions_only, "proxied": proxied}
        self._baseline = Baseline(policy, evidence=evidence, **rules)
        self._last_use: float | None = None
        self._last_sample: float | None = None
        #: The sample before the last one was past the cache wait: uses seen are legacy.
        self.settled = False
        self._used_before = False
        self._used_late: tuple[str, ...] = ()
        kept = Evidence() if evidence is None else evidence
        self.longest_gap, self.shortest = kept.longest_gap, kept.pause_min
        self.pauses, self.pause_sum = kept.pauses, kept.pause_sum
        #: A use after the cache wait was seen: a client that does not follow the pointer.
        self.legacy = kept.legacy
        # Not the last use: a pause measured across the time between two runs
        # would be the operator's schedule, not a client's.
        self._window = QuietWindow(
            restored=_local(kept.quiet_since, offset), idle_since=_local(kept.idle_since, offset)
        )

    def needed(self) -> float:
        """The quiet window the pauses seen so far call for."""
        return self.policy.needed_quiet(
            self.longest_gap, self.pauses, self.pause_sum, self.shortest, legacy=self.legacy
        )

    def evidence(self, user: str, position: str | None = None) -> Evidence:
        """What this drain knows now, in wall-clock time, for the state."""
        wall = functools.partial(_local, offset=-self.offset)
        return Evidence(
            user=user,
            quiet_since=wall(self._window.since),
            last_use=wall(self._last_use),
            longest_gap=self.longest_gap,
            pauses=self.pauses,
            pause_sum=self.pause_sum,
            pause_min=self.shortest,
            idle_since=wall(self._window.idle_since),
            sampled_at=wall(self._last_sample),
            position=position,
            legacy=self.legacy,
            **self._baseline.kept()._asdict(),
        )

    def observe(self, now: float, readings: Sequence[Reading]) -> DrainStatus:
        """Take one sample (all instances, read at about *now*); return the verdict."""
        policy = self.policy
        previous, self._last_sample = self._last_sample, now
        sample = self._baseline.compare(now, readings, self.needed())
        caches_expired = now - self.switched_at >= policy.cache_wait
        since = now if previous is None else previous  # a resumed run's first: this one
        self.settled = since - self.switched_at >= policy.cache_wait
        self._learn(now, sample)
        self._window.update(now, sample, caches_expired)
        past = now >= self.timeout_at
        if past and (sample.used or sample.earlier):
            self._used_late = tuple(sample.used + sample.earlier)
        quiet, needed = self._window.quiet(now), self.needed()
        # The quiet window started, or starts at the next clean sample.
        start = self._window.since
        window_from = max(now, self.switched_at + policy.cache_wait) if start is None else start
        earliest = max(self.switched_at + policy.min_drain, window_from + needed)
        verdict = self._verdict(now, sample, earliest, caches_expired)
        return DrainStatus(
            verdict=verdict,
            waited=now - self.switched_at,
            caches_in=max(0.0, self.switched_at + policy.cache_wait - now),
            quiet=quiet,
            needed_quiet=needed,
            done_in=max(0.0, earliest - now),
            timeout_in=max(0.0, self.timeout_at - now),
            sessions=sum(r.sessions.count for r in readings if r.sessions is not None),
            reasons=tuple(sample.used + sample.earlier + sample.unknown),
            longest_gap=self.longest_gap,
            held=sample.held,
            used_late=self._used_late,
            stuck=self._window.stuck(now, needed) if past and verdict is not Verdict.DONE else (),
        )

    def _learn(self, now: float, sample: Sample) -> None:
        """The pauses between two uses (they lengthen the window); legacy use."""
        if sample.used:
            self.legacy |= self.settled
            last = self._last_use
            if last is not None:
                pause = now - last
                self.longest_gap = max(self.longest_gap, pause)
                # A pause is time with a quiet sample in it, between two uses after the
                # cache wait: uses in consecutive samples are one busy stretch, and one
                # before the cache wait may be a client that follows the pointer.
                if last - self.switched_at >= self.policy.cache_wait and not self._used_before:
                    self.pauses += 1
                    self.pause_sum += pause
                    self.shortest = min(self.shortest or pause, pause)
            self._last_use = now
        elif sample.earlier:
            # Used at some unknown moment since the last run: no pause to learn.
            self._last_use = None
        self._used_before = bool(sample.used)

    def _verdict(
        self, now: float, sample: Sample, earliest: float, caches_expired: bool
    ) -> Verdict:
        """What the drain should do now."""
        if self._window.since is not None and now >= earliest:
            return Verdict.DONE
        run_over = self.run_until is not None and now >= self.run_until
        if now >= self.timeout_at and (sample.blocked or run_over):
            return Verdict.TIMEOUT
        if not caches_expired:
            return Verdict.CACHES
        if sample.used or sample.earlier or sample.unknown:
            return Verdict.IN_USE
        return Verdict.QUIET


def _local(t: float | None, offset: float) -> float | None:
    """A kept wall-clock instant on this run's monotonic clock (with ``-offset``, the
    other way)."""
    return None if t is None else t - offset
