"""The clients that do not follow the pointer: who still uses the old user.

After the switch and the clients' cache wait, every use of the old user comes
from a client that does not re-read the pointer: a job that resolved its URL
once, a Lambda that read it at cold start, a hand-made connection string.
:class:`LegacyLog` turns the drain's samples into a short list of such
*legacy clients*, for the operator to find and fix:

- each group of open sessions (instance, client address, application or
  program, database) is one client, with when it was first and last seen,
  the most sessions it held at once and when the oldest of them started;
- a use seen only as a change of a cumulative counter (a client that
  connected and left between two samples) is one *anonymous* client per
  instance;
- on PostgreSQL, the statements whose ``pg_stat_statements`` calls grew
  between two samples are credited to the clients that could have run them
  (the groups that were busy, new, or left in between; else the anonymous
  client), so each client carries its top statements by calls since it was
  first seen: the query text finds the code. When several could have, each
  is credited: the attribution narrows the search, it does not prove.

The log is pure: readings and a wall-clock time in, a list out. What the
rotation's state keeps of it is compact (:meth:`LegacyLog.to_list`): the
few most recently seen clients with short keys and truncated texts, and a
count of the others with short hashes, so that a resumed drain (the next
``rotate``, the next scheduled invocation) continues the same list and
counts a client it saw before only once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .drain import RESTART_TOLERANCE, Reading

__all__ = ["LegacyClient", "LegacyLog", "LegacyReport", "shorten", "shrink"]

#: Clients kept by name in the state (the most recently seen).
KEEP = 5
#: Statements kept per client.
TOP = 3
#: Characters kept of any text (address, program, database, query).
CHARS = 60
#: Short hashes kept of the clients no longer listed (6 characters each).
MAX_IDS = 32
ID_CHARS = 6

Key = tuple[str, str, str, str]


def shorten(text: str, limit: int = CHARS) -> str:
    """*text* cut to *limit* characters, the cut marked with ``…``."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_id(key: Key) -> str:
    return hashlib.blake2b("\0".join(key).encode(), digest_size=ID_CHARS // 2).hexdigest()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class LegacyClient:
    """One client seen using the old user after the cache wait."""

    #: ``host:port`` of the instance it used.
    instance: str
    #: Its address ('' for an anonymous client: seen only through a counter).
    client: str
    #: ``application_name`` (PostgreSQL) or ``program_name`` (MySQL), or ''.
    application: str
    #: The database it connected to, or ''.
    database: str
    #: Wall-clock times of the first and the last sample that showed it.
    first_seen: float
    last_seen: float
    #: The most open sessions it held at once (0 when never seen open).
    sessions: int = 0
    #: Wall-clock start of its oldest session, when the server says.
    started: float | None = None
    #: Its top statements: ``(query text, calls since it was first seen)``.
    statements: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> Key:
        return (self.instance, self.client, self.application, self.database)

    @property
    def anonymous(self) -> bool:
        return not self.client

    @property
    def name(self) -> str:
        """``10.0.0.5 (billing-cron) on db1 via 127.0.0.1:5432``."""
        if self.anonymous:
            return f"a client that connected and left between two samples, via {self.instance}"
        text = self.client
        if self.application:
            text += f" ({self.application})"
        if self.database:
            text += f" on {self.database}"
        return f"{text} via {self.instance}"

    def describe(self) -> str:
        """The name and its most called statement: one phrase for a message."""
        if not self.statements:
            return self.name
        query, calls = self.statements[0]
        return f"{self.name}, running {query!r} ({calls}x)"

    def to_dict(self) -> dict[str, Any]:
        """Compact, for the state: short keys, texts truncated, empty values left out."""
        data: dict[str, Any] = {"i": shorten(self.instance)}
        for key, value in (("c", self.client), ("a", self.application), ("d", self.database)):
            if value:
                data[key] = shorten(value)
        data["f"] = _round(self.first_seen)
        data["l"] = _round(self.last_seen)
        if self.sessions:
            data["n"] = self.sessions
        if self.started is not None:
            data["t"] = _round(self.started)
        if self.statements:
            data["s"] = [[shorten(q), c] for q, c in self.statements[:TOP]]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LegacyClient:
        """The inverse of :meth:`to_dict`."""
        return cls(
            instance=str(data["i"]),
            client=str(data.get("c") or ""),
            application=str(data.get("a") or ""),
            database=str(data.get("d") or ""),
            first_seen=float(data["f"]),
            last_seen=float(data["l"]),
            sessions=int(data.get("n") or 0),
            started=None if data.get("t") is None else float(data["t"]),
            statements=tuple((str(q), int(c)) for q, c in data.get("s") or []),
        )

    def to_json(self) -> dict[str, Any]:
        """Readable, for ``status --json`` and the rotator's log."""
        return {
            "instance": self.instance,
            "client": self.client or None,
            "application": self.application,
            "database": self.database,
            "first_seen": _round(self.first_seen),
            "last_seen": _round(self.last_seen),
            "sessions": self.sessions,
            "started": _round(self.started),
            "statements": [{"query": q, "calls": c} for q, c in self.statements],
            "name": self.name,
        }


@dataclass(frozen=True)
class LegacyReport:
    """What the log knows at one moment: for events, messages and ``status``."""

    #: The clients kept by name (see :attr:`LegacyLog.clients`).
    clients: tuple[LegacyClient, ...] = ()
    #: Every distinct client seen, listed or not.
    count: int = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def describe_first(self) -> str:
        """``3 legacy clients, first: 10.0.0.5 (billing-cron) on db1 via 127.0.0.1:5432``."""
        if not self.count:
            return "no legacy clients"
        noun = "legacy client" if self.count == 1 else "legacy clients"
        if not self.clients:
            return f"{self.count} {noun}"
        return f"{self.count} {noun}, first: {self.clients[0].name}"

    def names(self, limit: int = 3) -> str:
        """The first *limit* clients, with their top statement; ``; `` between them."""
        parts = [c.describe() for c in self.clients[:limit]]
        if self.count > len(parts):
            parts.append(f"{self.count - len(parts)} more")
        return "; ".join(parts)

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.clients]


@dataclass
class _Instance:
    """What the log remembers of one instance's previous sample."""

    at: float
    counters: Mapping[str, object]
    statements: dict[str, int]
    groups: dict[Key, int]
    started: float | None


class LegacyLog:
    """Feed it the drain's samples taken after the cache wait; it names the legacy clients.

    *clients* and *more*/*ids* come from :meth:`from_list` (a resumed drain).
    """

    def __init__(
        self, clients: Iterable[LegacyClient] = (), *, more: int = 0, ids: Iterable[str] = ()
    ) -> None:
        self._clients: dict[Key, LegacyClient] = {c.key: c for c in clients}
        #: Short hashes of the distinct clients seen but no longer listed.
        #: (In memory all of them, in insertion order; the state keeps the last MAX_IDS.)
        self._dropped: dict[str, None] = dict.fromkeys(ids)
        #: How many distinct clients are not listed (>= len(_dropped): past MAX_IDS
        #: only the count is kept).
        self._more = max(more, len(self._dropped))
        self._previous: dict[str, _Instance] = {}

    # -- samples -----------------------------------------------------------

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
            statements = _statements(reading.statements)
            if before is not None and _restarted(before.started, reading.started):
                before = None  # counters and statements started over
            if record:
                self._record(now_wall, reading, groups, statements, before)
            self._previous[where] = _Instance(
                at=now_wall,
                counters=dict(reading.counters),
                statements=statements,
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
        statements: Mapping[str, int],
        before: _Instance | None,
    ) -> None:
        where = reading.instance
        grown = _grown(before.statements, statements) if before is not None else {}
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

    def _touch(self, key: Key, now: float, *, sessions: int, started: float | None) -> None:
        """Record that *key* was seen at *now*."""
        old = self._clients.pop(key, None)
        if old is None:
            short = _short_id(key)
            if short in self._dropped:
                del self._dropped[short]
                self._more -= 1
            old = LegacyClient(*key, first_seen=now, last_seen=now)
        earliest = [t for t in (old.started, started) if t is not None]
        self._clients[key] = replace(
            old,
            last_seen=now,
            sessions=max(old.sessions, sessions),
            started=min(earliest) if earliest else None,
        )

    def _drop_stalest(self) -> None:
        """Stop listing the client seen longest ago (of those, the newest); keep counting it."""
        stalest = min(self._clients.values(), key=lambda c: (c.last_seen, -c.first_seen, c.key))
        del self._clients[stalest.key]
        self._dropped[_short_id(stalest.key)] = None
        self._more += 1

    def _credit(self, key: Key, grown: Mapping[str, int]) -> None:
        """Add the calls that grew to *key*'s statements; keep its top ones."""
        client = self._clients.get(key)
        if client is None or not grown:
            return
        calls = dict(client.statements)
        for query, more in grown.items():
            calls[query] = calls.get(query, 0) + more
        top = sorted(calls.items(), key=lambda qc: (-qc[1], qc[0]))[:TOP]
        self._clients[key] = replace(client, statements=tuple(top))

    # -- what it knows -----------------------------------------------------

    @property
    def count(self) -> int:
        """Distinct clients seen (listed or not)."""
        return len(self._clients) + self._more

    @property
    def unlisted(self) -> int:
        """Distinct clients seen that are no longer listed by name."""
        return self._more

    @property
    def clients(self) -> list[LegacyClient]:
        """The clients kept by name: those with an address first, then first seen first."""
        return sorted(self._clients.values(), key=lambda c: (c.anonymous, c.first_seen, c.key))

    def report(self) -> LegacyReport:
        """An immutable snapshot."""
        return LegacyReport(tuple(self.clients), self.count)

    def describe_first(self) -> str:
        """``3 legacy clients, first: 10.0.0.5 (billing-cron) on db1 via 127.0.0.1:5432``."""
        return self.report().describe_first()

    # -- the state ---------------------------------------------------------

    def to_list(self) -> list[dict[str, Any]]:
        """For :attr:`credflip.state.Rotation.legacy`: clients most recently seen last,
        after ``{"more": N, "ids": "…"}`` when some are no longer listed."""
        listed = sorted(self._clients.values(), key=lambda c: (c.last_seen, c.first_seen))
        out: list[dict[str, Any]] = []
        if self._more:
            out.append({"more": self._more, "ids": "".join(list(self._dropped)[-MAX_IDS:])})
        return out + [c.to_dict() for c in listed]

    @classmethod
    def from_list(cls, entries: Iterable[Mapping[str, Any]]) -> LegacyLog:
        """The inverse of :meth:`to_list`; entries it cannot read are left out."""
        clients: list[LegacyClient] = []
        more, ids = 0, ""
        for entry in entries:
            try:
                if "i" in entry:
                    clients.append(LegacyClient.from_dict(entry))
                else:
                    more, ids = int(entry.get("more") or 0), str(entry.get("ids") or "")
            except (KeyError, TypeError, ValueError):
                continue
        step = ID_CHARS
        return cls(clients, more=more, ids=(ids[i : i + step] for i in range(0, len(ids), step)))


def shrink(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """*entries* (:meth:`LegacyLog.to_list`) made smaller, keeping the count: first the
    clients seen longest ago down to one, then the hashes of those no longer listed
    (one seen again may then be counted twice), then the last one's statements, then
    the last one; None when nothing is left to drop."""
    log = LegacyLog.from_list(entries)
    clients = log.clients
    if len(clients) > 1:
        log._drop_stalest()
    elif log._dropped:
        log._dropped.clear()
    elif clients and clients[0].statements:
        log._clients[clients[0].key] = replace(clients[0], statements=())
    elif clients:
        log._drop_stalest()
        log._dropped.clear()
    else:
        return None
    return log.to_list()


def _key(instance: str, client: str, application: str, database: str) -> Key:
    return (shorten(instance), shorten(client), shorten(application), shorten(database))


def _statements(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Calls by query text as kept (texts equal once shortened are summed)."""
    out: dict[str, int] = {}
    for query, calls in pairs:
        text = shorten(query)
        out[text] = out.get(text, 0) + int(calls)
    return out


def _grown(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Calls made between two samples of the top statements, at least.

    A statement in both: the difference (its count, when it went down: a
    reset). A statement new in the list had no calls if the earlier list was
    complete (shorter than this one: the server's limit was not reached), or
    else may have been just below it: then only what it has beyond the
    earlier list's smallest count is sure.
    """
    floor = 0 if len(before) < len(after) else min(before.values(), default=0)
    out: dict[str, int] = {}
    for query, calls in after.items():
        if query in before:
            more = calls - before[query] if calls >= before[query] else calls
        else:
            more = calls - floor
        if more > 0:
            out[query] = more
    return out


def _restarted(before: float | None, after: float | None) -> bool:
    """Whether the server restarted between two samples (its start moved by more than
    the rounding of ``now - uptime``; as the drain tells)."""
    return before is not None and after is not None and abs(after - before) > RESTART_TOLERANCE
