"""The quiet window across runs: when it began, and whether it can still finish."""

from __future__ import annotations

from .sample import Sample


class QuietWindow:
    """When the quiet began, on the caller's monotonic clock, and since when nothing
    used the old user.

    *restored* is when the quiet began in an earlier run: it carries over while
    every instance vouches for the time since that run (each one's first
    comparison in this run). *idle_since* is the first sample after the last
    use seen (kept across runs too): unlike the window, nothing but a use resets it.
    """

    def __init__(self, *, restored: float | None = None, idle_since: float | None = None) -> None:
        self.since: float | None = None
        self.idle_since = idle_since
        self._restored = restored
        self._run_start: float | None = None
        #: What last started the window over (or voided an earlier run's) without a use.
        self.restarted_by: tuple[str, ...] = ()

    def update(self, now: float, sample: Sample, caches_expired: bool) -> None:
        """Start, continue or restart the window (or take an earlier run's)."""
        self._run_start = now if self._run_start is None else self._run_start
        use = bool(sample.used or sample.earlier)
        if use:
            self.idle_since = None
        elif caches_expired and self.idle_since is None:
            self.idle_since = now
        if not use and (sample.unknown or (self._restored is not None and not sample.vouched)):
            self.restarted_by = tuple(sample.unknown + sample.unvouched)
        if use or not sample.vouched:
            # The window an earlier run began holds only while every instance
            # vouches for the time since that run.
            self._restored = None
        if caches_expired:
            if use or sample.unknown:
                self.since = None
            elif self.since is None:
                restored = self._restored
                self.since = now if restored is None else min(now, restored)
        if not sample.waiting:
            # Every instance compared: the restored window was taken or dropped.
            self._restored = None

    def quiet(self, now: float) -> float:
        """Seconds of the current window so far."""
        return 0.0 if self.since is None else now - self.since

    def stuck(self, now: float, needed: float) -> tuple[str, ...]:
        """Why a quiet drain cannot finish (empty when it can); asked past the timeout.

        The window began in this run (none carried over from an earlier one) and
        is not over, although nothing used the old user for two whole windows: a
        restart without use puts the end of the window off by one window at most,
        so only a window that starts over again and again (at every run: one that
        cannot carry over) keeps a quiet drain from finishing that long.
        """
        if self.idle_since is None or self._run_start is None:
            return ()
        began_here = self.since is None or self.since >= self._run_start
        if not began_here or self.quiet(now) >= needed or now - self.idle_since < 2 * needed:
            return ()
        return self.restarted_by or ("the quiet window started over",)
