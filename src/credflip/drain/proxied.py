"""Behind RDS Proxy: which of the old user's idle sessions ran anything.

The proxy keeps the old user's database connections open after its clients
left, so an open, idle session is no use. A client that reuses one of them
is: a session's latest state change (PostgreSQL ``state_change``) moves
whenever it begins or ends a statement, and a new session's is later than any
before it. This sees a client that reuses a connection the proxy opened
before the drain's watch began, whose statements PostgreSQL counts for the
group role, not for the old user.

A session that closed takes its state change with it: whether it ran anything
between the last look at it and its end cannot be told. Such a session may be
the one a client used last (the proxy closes idle connections whenever it
likes), so it is no quiet. It is *unknown*, between two samples as between
two runs: the window starts over (as for a restart), but the proxy closing
connections is no use that ends a run past the timeout. The proxy's pool of
the old user only shrinks once its clients left (a session opened meanwhile
is a login, use), so each one closes at most once: the drain finishes a
window after the last one closed, or ends the rest itself when it finishes.

Each instance's sessions are compared by backend pid with the last sample's;
an earlier run keeps the latest state change it saw and a digest of the
sessions then (:attr:`~.evidence.Evidence.activity`, ``pooled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..engines.base import Sessions
from .evidence import digest


class _Out(Protocol):
    used: list[str]
    earlier: list[str]
    unknown: list[str]


class ProxiedSessions:
    """Each instance's sessions of the user (pid and latest state change), sample after
    sample.

    *activity* and *pooled* are what an earlier run kept: each instance's latest
    state change of the user's sessions (0: it had none) and the digest of those
    sessions (:func:`sessions_digest`; none kept: it had none). The first sample
    of this run is compared with them.
    """

    def __init__(self, activity: Mapping[str, float], pooled: Mapping[str, str]) -> None:
        self._restored = dict(activity)
        self._restored_sets = dict(pooled)
        self._high: dict[str, float] = {}
        self._seen: dict[str, dict[int, float]] = {}

    def compare(self, sessions: Sessions, where: str, out: _Out) -> None:
        """Add to *out* a use on *where* since the last sample (or the last run), or a
        session that closed meanwhile."""
        now = _changes(sessions)
        if now is None:  # the server does not say which sessions it has
            return
        high = max(now.values(), default=0.0)
        before = self._seen.get(where)
        self._seen[where] = now
        restored = self._restored.pop(where, None)
        restored_set = self._restored_sets.pop(where, None)
        if before is not None:
            if any(pid not in before or seen > before[pid] for pid, seen in now.items()):
                out.used.append(f"a session on {where} ran a statement or logged in")
            if closed := len(before.keys() - now.keys()):
                out.unknown.append(_closed(closed, where, "sample"))
        elif restored is not None:
            if high > restored:
                out.earlier.append(f"a session on {where} ran a statement since the last run")
            elif sessions_digest(now) != restored_set:
                out.unknown.append(_closed(None, where, "run"))
        self._high[where] = max(high, self._high.get(where, 0.0), restored or 0.0)

    def kept(self) -> tuple[dict[str, float], dict[str, str]]:
        """Each instance's latest state change seen and the digest of its sessions at the
        last sample, for the evidence (an instance not read in this run keeps the earlier
        run's)."""
        sets = {k: d for k, v in self._seen.items() if (d := sessions_digest(v))}
        return {**self._restored, **self._high}, {**self._restored_sets, **sets}


def sessions_digest(changes: Mapping[int, float]) -> str | None:
    """The digest of an instance's sessions (pid and latest state change), 8 characters
    (kept for each instance in a state of 4 KB); None for none."""
    return digest(tuple(sorted(changes.items())))[:8] if changes else None


def _changes(sessions: Sessions) -> dict[int, float] | None:
    """Each session's latest state change by pid; None when the server does not say."""
    if any(len(g.changes) != g.count for g in sessions.groups):
        return None
    return {pid: seen for g in sessions.groups for pid, seen in g.changes}


def _closed(count: int | None, where: str, since: str) -> str:
    """Why closed sessions are no quiet."""
    which = "some sessions" if count is None else f"{count} session(s)"
    return (
        f"{which} of the old user on {where} closed since the last {since}: what they ran "
        f"before cannot be told"
    )
