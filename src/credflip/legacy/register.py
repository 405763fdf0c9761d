"""The clients a drain saw: the most recent listed by name, the others counted; kept compact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Self

from .clients import ID_CHARS, MAX_IDS, TOP, Key, LegacyClient, LegacyReport


def _short_id(key: Key) -> str:
    return hashlib.blake2b("\0".join(key).encode(), digest_size=ID_CHARS // 2).hexdigest()


class ClientRegister:
    """The legacy clients seen: the most recently seen listed by name, the others counted.

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
    def from_list(cls, entries: Iterable[Mapping[str, Any]]) -> Self:
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
    log = ClientRegister.from_list(entries)
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
