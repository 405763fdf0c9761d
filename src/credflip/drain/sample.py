"""One sample against the last: which instance's sessions and counters show use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engines.base import SessionGroup, Sessions
from .evidence import Evidence, digest
from .policy import RESTART_TOLERANCE, DrainPolicy
from .values import Reading


@dataclass
class Sample:
    """What :meth:`Baseline.compare` found in one sample."""

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


class Baseline:
    """Each instance's counters and start time at the last sample, to compare the next with.

    *evidence* is what an earlier run kept: each instance's digest of all its
    counters, compared once with this run's first sample of that instance.
    """

    def __init__(
        self,
        policy: DrainPolicy,
        *,
        terminate: bool,
        sessions_only: bool,
        evidence: Evidence | None,
    ) -> None:
        self.policy = policy
        self.terminate = terminate
        self.sessions_only = sessions_only
        #: Instances whose counters this drain has read: losing them is not quiet.
        self._counted: set[str] = set()
        self._pending_since: dict[str, float] = {}
        self._counters: dict[tuple[str, str], str] = {}
        self._started: dict[str, float] = {}
        # From an earlier run: each instance's digest of all its counters.
        self._restored: dict[str, str] = {}
        if evidence is not None:
            self._restored = dict(evidence.counters)
            self._counted = set(evidence.counters)
            self._started = dict(evidence.started)

    def kept(self) -> tuple[dict[str, str], dict[str, float]]:
        """Each instance's digest of all its counters, and its start time, for the evidence."""
        by_instance: dict[str, list[tuple[str, str]]] = {}
        for (where, name), value in sorted(self._counters.items()):
            by_instance.setdefault(where, []).append((name, value))
        counters = {k: digest(tuple(v)) for k, v in by_instance.items()}
        # An instance not sampled again in this run keeps its earlier digest.
        for where, value in self._restored.items():
            counters.setdefault(where, value)
        return counters, {k: v for k, v in self._started.items() if k in counters}

    def _held(self, group: SessionGroup, needed: float) -> bool:
        """With ``terminate``: sessions idle for the whole window are held, not used."""
        return self.terminate and group.idle_for is not None and group.idle_for >= needed

    def compare(self, now: float, readings: Sequence[Reading], needed: float) -> Sample:
        """What one sample shows, instance by instance."""
        out = Sample()
        seen: set[tuple[str, str]] = set()
        for reading in readings:
            self._instance(now, reading, needed, out, seen)
        # A counter that vanished (instance gone, signal lost) has no baseline
        # when it comes back.
        for key in set(self._counters) - seen:
            if not any(r.instance == key[0] and r.pending is not None for r in readings):
                del self._counters[key]
        out.blocked |= bool(out.used)
        return out

    def _instance(
        self, now: float, reading: Reading, needed: float, out: Sample, seen: set[tuple[str, str]]
    ) -> None:
        """One instance's sessions, start time and pending replay."""
        where = reading.instance
        if reading.error is not None or reading.sessions is None:
            out.unknown.append(f"{where} unreachable: {reading.error or 'no answer'}")
            out.blocked = True
            out.vouched = False
            return
        active = Sessions(tuple(g for g in reading.sessions.groups if not self._held(g, needed)))
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
            return
        self._pending_since.pop(where, None)
        self._counters_of(reading, out, seen)

    def _counters_of(self, reading: Reading, out: Sample, seen: set[tuple[str, str]]) -> None:
        """One instance's counters against the last sample's (or an earlier run's)."""
        where = reading.instance
        digests = {name: digest(value) for name, value in reading.counters.items()}
        restored = self._restored.pop(where, None)
        if not digests:
            out.vouched = False
            if where in self._counted and not self.sessions_only:
                # userstat off again after a restart, an extension dropped: the
                # drain would be blind to short logins there.
                out.unknown.append(f"{where}: its login counter is gone")
            return
        self._counted.add(where)
        if restored is not None:
            # The first sample of this run against the last one of an earlier run.
            if digest(tuple(sorted(digests.items()))) != restored:
                out.earlier.append(f"the counters on {where} changed since the last run")
            for name, value in digests.items():
                self._counters[(where, name)] = value
                seen.add((where, name))
            return
        for name, value in digests.items():
            key = (where, name)
            out.vouched &= key in self._counters
            seen.add(key)
            if key not in self._counters:
                out.unknown.append(f"{where}: {name} has no earlier sample to compare with")
            elif self._counters[key] != value:
                out.used.append(f"{name} changed on {where}")
            self._counters[key] = value
