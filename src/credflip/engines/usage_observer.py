"""Who observes use: a user's sessions and the server's cumulative signals, the drain's
watch on the old user, and the positions and members of a replicated cluster.

The *drain* needs all of it (:meth:`UsageObserver.observe`, the watch, the
replicas' :meth:`UsageObserver.replay_gap`); ``status`` and ``--end-sessions``
:meth:`UsageObserver.sessions` and :meth:`UsageObserver.terminate`.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence

from .values import Observation, PooledBackend, Sessions, Signal, Step

__all__ = ["UsageObserver"]


class UsageObserver(abc.ABC):
    """What a server shows of a user's use, and how the drain makes it countable."""

    # -- sessions ----------------------------------------------------------

    @abc.abstractmethod
    def sessions(self, user: str, *, pooled: Collection[PooledBackend] = ()) -> Sessions:
        """Sample the open sessions of *user*, leaving out those a pooler holds (*pooled*:
        its server connections, which its own view accounts for)."""

    @abc.abstractmethod
    def terminate(self, user: str, *, only: Collection[PooledBackend] | None = None) -> int:
        """End every session of *user* (or only those of *only*, a pooler's server
        connections, that are idle: not serving a client); return how many were ended."""

    # -- the drain ---------------------------------------------------------

    @abc.abstractmethod
    def signals(self) -> list[Signal]:
        """What this server can show of a user's use, available or not (with how to enable)."""

    @abc.abstractmethod
    def observe(self, user: str, *, pooled: Collection[PooledBackend] | None = None) -> Observation:
        """Sample *user*: open sessions (but those in *pooled*, see :meth:`sessions`) and
        the fingerprints of every available counter; behind a pooler (*pooled* not
        None, maybe empty), also of the requests on its connections of *user*."""

    def enable_signals(self) -> list[str]:
        """Turn on what the admin may turn on without a restart; say what was done."""
        return []

    def count_problem(self, user: str, group: str | None) -> str | None:
        """Why the counters cannot attribute *user*'s logins to it, or None when they can."""
        return None

    def plan_watch(self, user: str, group: str | None) -> list[Step]:
        """The statements :meth:`begin_watch` runs (none where logins count per user)."""
        return []

    def begin_watch(self, user: str, group: str | None) -> None:
        """Make *user*'s new logins count as its own (called once the pointer moved away)."""
        self.execute(self.plan_watch(user, group))

    def end_watch(self, user: str, group: str | None) -> None:
        """Undo :meth:`begin_watch` and hand anything the user created meanwhile to *group*."""
        return

    @abc.abstractmethod
    def execute(self, steps: Sequence[Step]) -> None:
        """Run *steps*: the watch changes the user through the one place changes run
        (:meth:`~credflip.engines.user_admin.UserAdmin.execute`)."""

    @abc.abstractmethod
    def server_time(self) -> float:
        """Now on this server's clock (seconds since the epoch)."""

    # -- replicas and clusters ---------------------------------------------

    def is_standby(self) -> bool:
        """True when this server is a read-only replica."""
        return False

    def position(self) -> str | None:
        """The primary's current write position (PostgreSQL: WAL LSN), or None."""
        return None

    def replay_gap(self, position: str) -> int | None:
        """Bytes this server still has to replay to reach *position* (0 when it has).

        None when it cannot tell (not a streaming standby, or no positions).
        """
        return None

    def cluster_members(self) -> list[str] | None:
        """Aurora: the instance identifiers of the cluster; None when not on Aurora."""
        return None

    def aurora_instance(self) -> str | None:
        """Aurora: the identifier of the cluster member this connection reached; else None."""
        return None

    def known_replicas(self) -> list[tuple[str, int | None]]:
        """The replicas that stream from this server, as ``(host, port)`` (port None when
        unknown), so that the drain can tell when one of them is not watched.

        Raises :class:`~credflip.errors.InsufficientPrivilege` (with the GRANT
        to run) when the server hides where a replica is.
        """
        return []
