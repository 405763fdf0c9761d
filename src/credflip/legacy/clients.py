"""The legacy clients as values: one client seen using the old user, and a snapshot of all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """*text* on one line (a client names its program itself) cut to *limit*
    characters, the cut marked with ``…``."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
