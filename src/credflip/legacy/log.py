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
            if record:
                self._record(now_wall, reading, groups, before)
            self._previous[where] = _Instance(
                at=now_wall,
                counters=dict(reading.counters),
                groups=groups,
                started=reading.started,
            )
        for gone in set(self._previous) - seen:
            del self._previous[gone]
        while len(self._clients) > KEEP:
            self._drop_stalest()

    def _record(
        self,
        now: float,
        reading: Reading,
        groups: Mapping[Key, int],
        before: _Instance | None,
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
        # that too), and one that was there before and left or shrank.
        interval = now - before.at if before is not None else 0.0
        causes: set[Key] = set()
        for g in reading.sessions.groups if reading.sessions is not None else ():
            key = _key(where, g.client or "?", g.application, g.database)
            new = before is None or groups[key] > before.groups.get(key, 0)
            busy = g.idle_for is None or g.idle_for < interval
            self._touch(key, now, sessions=groups[key], started=g.started)
            if new or busy:
                causes.add(key)
        left = (
            set()
            if before is None
            else {k for k, n in before.groups.items() if groups.get(k, 0) < n}
        )
        if before is None or not (changed or grown):
            return
        for key in left - causes:
            self._touch(key, now, sessions=0, started=None)  # its last use was in between
        causes |= left
        if not causes:
            causes = {_key(where, "", "", "")}
            self._touch(next(iter(causes)), now, sessions=0, started=None)
        for key in causes:
            self._credit(key, grown)


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
