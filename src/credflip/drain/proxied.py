"""Behind RDS Proxy: which of the old user's idle sessions ran anything.

The proxy keeps the old user's database connections open after its clients
left, so an open, idle session is no use. A client that reuses one of them
is: the latest state change of the user's sessions on an instance (PostgreSQL
``state_change``) moves whenever one of them begins or ends a statement, and a
new session's is later than any before it; sessions that close only lower it,
so the highest seen is kept. This sees a client that reuses a connection the
proxy opened before the drain's watch began, whose statements PostgreSQL
counts for the group role, not for the old user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..engines.base import Sessions


class _Out(Protocol):
    used: list[str]
    earlier: list[str]


class ProxiedSessions:
    """Each instance's latest state change of the user's sessions, sample after sample.

    *restored* is what an earlier run kept (:attr:`Evidence.activity`): the first
    sample of this run is compared with it.
    """

    def __init__(self, restored: Mapping[str, float]) -> None:
        self._restored = dict(restored)
        self._high: dict[str, float] = {}

    def compare(self, sessions: Sessions, where: str, out: _Out) -> None:
        """Add to *out* a use on *where* since the last sample (or the last run)."""
        changes = [g.last_change for g in sessions.groups if g.last_change is not None]
        mark = max(changes, default=None)
        before = self._high.get(where)
        restored = self._restored.pop(where, None)
        if mark is None:
            if restored is not None:
                self._high.setdefault(where, restored)
            return
        if before is not None and mark > before:
            out.used.append(f"a session on {where} ran a statement or logged in")
        elif before is None and restored is not None and mark > restored:
            out.earlier.append(f"a session on {where} ran a statement since the last run")
        self._high[where] = max(x for x in (mark, before, restored) if x is not None)

    def kept(self) -> dict[str, float]:
        """Each instance's highest state change seen, for the evidence."""
        return {**self._restored, **self._high}
