"""One sample against the last: which instance's sessions and counters show use."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from ..engines.base import SessionGroup, Sessions
from .evidence import UNCOUNTED, Evidence, digest
from .policy import RESTART_TOLERANCE, DrainPolicy
from .proxied import ProxiedSessions
from .servers import ServerConnections
from .values import Reading


@dataclass
class Sample:
    """What :meth:`Baseline.compare` found in one sample."""

    used: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: Uses between the last run and this one (a counter that moved meanwhile).
    earlier: list[str] = field(default_factory=list)
    #: Why an instance that is neither used nor unknown cannot carry the window an
    #: earlier run kept over into this one.
    unvouched: list[str] = field(default_factory=list)
    #: Sessions idle for the whole window (``terminate``).
    held: int = 0
    #: Every instance vouched for the time since the earlier run: its counters
    #: compared with the ones that run kept, or (``sessions_only`` accepted) it was
    #: watched on open sessions alone then and now.
    vouched: bool = True
    #: Some instance could not be compared yet (a standby still replaying).
    waiting: bool = False
    #: Past the timeout, this sample ends the run.
    blocked: bool = False


class Kept(NamedTuple):
    """What :meth:`Baseline.kept` keeps for the evidence (:class:`Evidence`'s fields)."""

    counters: dict[str, str]
    started: dict[str, float]
    activity: dict[str, float]
    pooled: dict[str, str]
    servers: dict[str, str]

    @classmethod
    def of(
        cls,
        counters: dict[str, str],
        started: dict[str, float],
        activity: dict[str, float],
        pooled: dict[str, str],
        servers: dict[str, str],
    ) -> Kept:
        """*counters*, and the others for its instances only."""
        return cls(
            counters,
            _only(started, counters),
            _only(activity, counters),
            _only(pooled, counters),
            _only(servers, counters),
        )


class Baseline:
    """Each instance's counters and start time at the last sample, to compare the next with.

    *evidence* is what an earlier run kept: each instance's digest of all its
    counters (or :data:`UNCOUNTED`), compared once with this run's first sample
    of that instance. Every sample reads every instance of the fleet (those it
    cannot reach too): what is kept for the next run is for those only.
    """

    def __init__(
        self,
        policy: DrainPolicy,
        *,
        terminate: bool,
        sessions_only: bool,
        evidence: Evidence | None,
        proxied: bool = False,
    ) -> None:
        self.policy = policy
        self.terminate = terminate
        self.sessions_only = sessions_only
        kept = {} if evidence is None else evidence.counters
        self._restored = dict(kept)  # from an earlier run: each instance's digest
        #: Instances this drain has read (in this run, or the one that kept the evidence).
        self._watched = set(kept)
        #: Instances whose counters this drain has read: losing them is not quiet.
        self._counted = {k for k, v in kept.items() if v != UNCOUNTED}
        self._restarts = Restarts({} if evidence is None else dict(evidence.started))
        self._uncounted: set[str] = set()  # read without any counter in this run
        self._fleet: set[str] | None = None  # the fleet's instances at the last sample
        self._pending_since: dict[str, float] = {}
        self._counters: dict[tuple[str, str], str] = {}
        #: The counters each instance showed in this run: one that goes is no quiet.
        self._names: dict[str, set[str]] = {}
        #: Behind a pooler (RDS Proxy): which idle sessions ran anything.
        pool = evidence or Evidence()
        self._pool = ProxiedSessions(pool.activity, pool.pooled) if proxied else None
        #: Behind PgBouncer: its server connections, against an earlier run's.
        self._servers = ServerConnections(pool.servers)

    def kept(self) -> Kept:
        """For the evidence: each instance's counters digest, its start time and (behind a
        pooler) its sessions' latest state change and digest. An instance not compared
        again in this run (unreachable, replaying) keeps its earlier digest; one the
        fleet no longer has is forgotten."""
        counters = _digests(self._counters, self._uncounted)
        for where, value in self._restored.items():
            counters.setdefault(where, value)
        if self._fleet is not None:
            counters = {k: v for k, v in counters.items() if k in self._fleet}
        activity, pooled = ({}, {}) if self._pool is None else self._pool.kept()
        return Kept.of(counters, self._restarts.started, activity, pooled, self._servers.kept())

    def compare(self, now: float, readings: Sequence[Reading], needed: float) -> Sample:
        """What one sample shows, instance by instance."""
        out = Sample()
        seen: set[tuple[str, str]] = set()
        self._fleet = {r.instance for r in readings}
        for reading in readings:
            self._servers.compare(reading, out)
            self._instance(now, reading, needed, out, seen)
        # A counter that vanished (instance gone, signal lost) has no baseline on its return.
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
        held = functools.partial(_held, needed=needed, terminate=self.terminate, pool=self._pool)
        active = Sessions(tuple(g for g in reading.sessions.groups if not held(g)))
        out.held += reading.sessions.count - active.count
        if active.count:
            out.used.append(f"{active.count} session(s) on {where} ({active.describe()})")
        if self._pool is not None:
            self._pool.compare(reading.sessions, where, out)
        restarted = self._restarted(reading, out)
        if reading.pending is not None:
            out.unknown.append(f"{where}: {reading.pending}")
            since = self._pending_since.setdefault(where, now)
            out.blocked |= now - since >= self.policy.pending_grace
            out.waiting = True
            return
        self._pending_since.pop(where, None)
        self._counters_of(reading, out, seen, restarted=restarted)

    def _restarted(self, reading: Reading, out: Sample) -> bool:
        """Whether the server may have restarted since the last sample (:class:`Restarts`):
        no use, but its counters started over (or missed logins meanwhile), so they are
        compared from here on and the quiet window starts over (*unknown*)."""
        why = self._restarts.why(reading)
        if why is None:
            return False
        out.unknown.append(why)
        out.vouched = False
        self._restored.pop(reading.instance, None)
        for key in [k for k in self._counters if k[0] == reading.instance]:
            del self._counters[key]
        return True

    def _counters_of(
        self, reading: Reading, out: Sample, seen: set[tuple[str, str]], *, restarted: bool
    ) -> None:
        """One instance's counters against the last sample's (or an earlier run's)."""
        where = reading.instance
        digests = {name: digest(value) for name, value in reading.counters.items()}
        restored = self._restored.pop(where, None)
        watched = where in self._watched
        self._watched.add(where)
        gone = _gone(self._names.setdefault(where, set()), reading, out, self.sessions_only)
        if not digests:
            self._uncounted.add(where)
            accepted, counted = self.sessions_only, where in self._counted
            why = _why(reading, gone or sorted(reading.silent))
            _vouch_uncounted(
                reading, out, accepted=accepted, counted=counted, watched=watched, why=why
            )
            return
        self._uncounted.discard(where)
        self._counted.add(where)
        if restored is not None and restored != UNCOUNTED:
            # The first sample of this run against the last one of an earlier run.
            if digest(tuple(sorted(digests.items()))) != restored:
                out.earlier.append(f"the counters on {where} changed since the last run")
            for name, value in digests.items():
                self._counters[(where, name)] = value
                seen.add((where, name))
            return
        for name, value in digests.items():
            key = (where, name)
            seen.add(key)
            if key not in self._counters:
                out.vouched = False
                if not restarted:  # a restart says so already
                    out.unknown.append(f"{where}: {name} has no earlier sample to compare with")
            elif self._counters[key] != value:
                out.used.append(f"{name} changed on {where}")
            self._counters[key] = value


class Restarts:
    """Each instance's start time and admin connection at the last sample that read them.

    Two start times further apart than :data:`RESTART_TOLERANCE` mean a restart
    (also across runs: *started* is what an earlier run kept). Within a run, an
    instance read through a new admin connection may have restarted however
    quickly: the old one broke, and a restart breaks it.
    """

    def __init__(self, started: dict[str, float]) -> None:
        self.started = started
        self._connections: dict[str, int] = {}

    def why(self, reading: Reading) -> str | None:
        """Why *reading*'s counters cannot be compared with the last ones; None when they can."""
        where = reading.instance
        before, link = self.started.get(where), self._connections.get(where)
        if reading.started is not None:
            self.started[where] = reading.started
        if reading.connection is not None:
            self._connections[where] = reading.connection
        now = reading.started
        if before is not None and now is not None and abs(before - now) > RESTART_TOLERANCE:
            return f"{where} restarted since the last sample"
        if link is not None and reading.connection not in (None, link):
            return (
                f"{where} was read through a new admin connection, so its counters are "
                f"compared from here on (the server may have restarted)"
            )
        return None


def _gone(names: set[str], reading: Reading, out: Sample, accepted: bool) -> list[str]:
    """Which of the counters the instance showed in this run (*names*, updated) *reading*
    lacks. While another goes on, each is *unknown* unless the risk is *accepted*: the
    one gone (userstat turned off) may be the one that sees a login the other misses."""
    gone = sorted(names - set(reading.counters))
    names.update(reading.counters)
    if gone and reading.counters and not accepted:
        out.vouched = False
        out.unknown.append(
            f"{reading.instance}: its login counter {', '.join(gone)} is gone{_why(reading, gone)}"
        )
    return gone


def _why(reading: Reading, names: Sequence[str]) -> str:
    """What the instance says of why counters *names* count nothing, in parentheses."""
    whys = dict.fromkeys(reading.silent[n] for n in names if reading.silent.get(n))
    return f" ({'; '.join(whys)})" if whys else ""


def _held(
    group: SessionGroup, *, needed: float, terminate: bool, pool: ProxiedSessions | None
) -> bool:
    """Idle sessions not counted as use: with *terminate* those idle for the whole window
    (*needed*); behind a pooler all (its *pool* sees those that ran anything)."""
    if group.idle_for is None:
        return False
    return pool is not None or (terminate and group.idle_for >= needed)


def _digests(counters: dict[tuple[str, str], str], uncounted: set[str]) -> dict[str, str]:
    """Each instance's digest of all its counters (:data:`UNCOUNTED` for one without)."""
    by_instance: dict[str, list[tuple[str, str]]] = {}
    for (where, name), value in sorted(counters.items()):
        by_instance.setdefault(where, []).append((name, value))
    out = {k: digest(tuple(v)) for k, v in by_instance.items()}
    out.update(dict.fromkeys(sorted(uncounted - set(out)), UNCOUNTED))
    return out


V = TypeVar("V")


def _only(values: dict[str, V], keys: dict[str, str]) -> dict[str, V]:
    return {k: v for k, v in values.items() if k in keys}


def _vouch_uncounted(
    reading: Reading, out: Sample, *, accepted: bool, counted: bool, watched: bool, why: str = ""
) -> None:
    """An instance read without any counter: watched on open sessions alone.

    With ``sessions_only`` *accepted* it vouches for the time since the earlier
    run when that run *watched* it too: a login between two runs is then missed
    the way one between two samples is, the risk accepted. Without it the
    instance is *unknown* (never quiet): a login shorter than one sample would
    go unseen there. The start refuses such an instance, but not one it could
    not reach, which may come back without a counter; and one whose counter
    this drain had read (*counted*) lost it (``userstat`` off again after a
    restart, an extension dropped).
    """
    where = reading.instance
    if not accepted:
        out.vouched = False
        if counted:
            # userstat off again after a restart, an extension dropped: the
            # drain would be blind to short logins there.
            out.unknown.append(f"{where}: its login counter is gone{why}")
        else:
            how = f" ({reading.enable})" if reading.enable else why
            out.unknown.append(
                f"{where} counts no logins{how}: enable a counter there, or accept draining "
                f'on open sessions alone with --sessions-only (Lambda: "sessions_only": true)'
            )
    elif not watched:
        out.vouched = False
        out.unvouched.append(f"{where} was not watched by the last run")
