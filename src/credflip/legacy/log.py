"""The legacy log: samples in, each use credited to the clients that could have made it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..drain import RESTART_TOLERANCE, Reading
from .clients import KEEP, Key, LegacyClient, shorten
from .register import ClientRegister


@dataclass
class _Instance:
    """What the log remembers of one instance's previous sample."""

    at: float
    counters: Mapping[str, object]
    groups: dict[Key, int]
    started: float | None
    #: The groups that left or shrank since the sample before it.
    left: frozenset[Key] = frozenset()


class LegacyLog(ClientRegister):
    """Feed it the drain's samples taken after the cache wait; it names the legacy clients.

    *clients* and *more*/*ids* come from :meth:`from_list` (a resumed drain).
    """

    def __init__(
        self, clients: Iterable[LegacyClient] = (), *, more: int = 0, ids: Iterable[str] = ()
    ) -> None:
        super().__init__(clients, more=more, ids=ids)
        self._previous: dict[str, _Instance] = {}

    def update(self, now_wall: float, readings: Sequence[Reading], *, record: bool = True) -> None:
        """Take one sample of every instance, read at about *now_wall* (wall clock).

        With *record* False (the cache wait is still running) the sample only
        serves as the baseline the next one is compared with.
        """
        seen: set[str] = set()
        for reading in readings:
            if reading.error is not None or reading.sessions is None:
                continue  # nothing known; the next answer has no baseline
            where = reading.instance
            seen.add(where)
            before = self._previous.get(where)
            groups: dict[Key, int] = {}
            for g in reading.sessions.groups:
                key = _key(where, g.client or "?", g.application, g.database)
                groups[key] = groups.get(key, 0) + g.count
            if before is not None and _restarted(before.started, reading.started):
                before = None  # counters and statements started over
            left = _left(before, groups) if before is not None else self._gone(where, groups)
            if record:
                self._record(now_wall, reading, groups, before, left)
            self._previous[where] = _Instance(
                at=now_wall,
                counters=dict(reading.counters),
                groups=groups,
                started=reading.started,
                left=left,
            )
        for gone in set(self._previous) - seen:
            del self._previous[gone]
        while len(self._clients) > KEEP:
            self._drop_stalest()

    def _gone(self, where: str, groups: Mapping[Key, int]) -> frozenset[Key]:
        """Without a previous sample of *where* (a resumed drain's first, or the first
        after a gap): the clients it listed there at its latest sample that are not
        there now, as if they had just left."""
        here = [c for c in self._clients.values() if c.instance == shorten(where)]
        latest = max((c.last_seen for c in here), default=None)
        return frozenset(
            c.key for c in here if c.last_seen == latest and not c.anonymous and c.key not in groups
        )

    def _record(
        self,
        now: float,
        reading: Reading,
        groups: Mapping[Key, int],
        before: _Instance | None,
        left: frozenset[Key],
    ) -> None:
        where = reading.instance
        grown = _statements(reading.statements)
        changed = (
            before is not None
            and reading.pending is None
            and any(
                name in before.counters and before.counters[name] != value
                for name, value in reading.counters.items()
            )
        )
        # Who could have caused what the counters and statements show since the
        # previous sample: a group that is new or grew (a login), one that ran a
        # statement (not idle all along: a client that reconnects looks like
        # that too), and one that was there before and left or shrank. Failing
        # those, one that left in the interval before: an observation reads the
        # counters before the sessions, so what a session did between the two
        # reads (its last statement, MySQL's count of its quit) shows in the
        # counters only in the next sample, after the session list saw it go.
        interval = now - before.at if before is not None else 0.0
        causes: set[Key] = set()
        for g in reading.sessions.groups if reading.sessions is not None else ():
            key = _key(where, g.client or "?", g.application, g.database)
            new = before is None or groups[key] > before.groups.get(key, 0)
            busy = g.idle_for is None or g.idle_for < interval
            self._touch(key, now, sessions=groups[key], started=g.started)
            if new or busy:
                causes.add(key)
        if before is None or not (changed or grown):
            return
        if not causes and not left:
            left = before.left
        for key in left - causes:
            self._touch(key, now, sessions=0, started=None)  # its last use was in between
        causes |= left
        if not causes:
            causes = {_key(where, "", "", "")}
            self._touch(next(iter(causes)), now, sessions=0, started=None)
        for key in causes:
            self._credit(key, grown)


def _left(before: _Instance, groups: Mapping[Key, int]) -> frozenset[Key]:
    """The groups of the previous sample that left or shrank since."""
    return frozenset(k for k, n in before.groups.items() if groups.get(k, 0) < n)


def _key(instance: str, client: str, application: str, database: str) -> Key:
    return (shorten(instance), shorten(client), shorten(application), shorten(database))


def _statements(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Calls since the previous sample by query text as kept (texts equal once
    shortened are summed)."""
    out: dict[str, int] = {}
    for query, calls in pairs:
        text = shorten(query)
        out[text] = out.get(text, 0) + int(calls)
    return out


def _restarted(before: float | None, after: float | None) -> bool:
    """Whether the server restarted between two samples (its start moved by more than
    the rounding of ``now - uptime``; as the drain tells)."""
    return before is not None and after is not None and abs(after - before) > RESTART_TOLERANCE
