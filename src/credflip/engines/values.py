"""The values engines and rotations exchange: a planned statement, a user's state, sessions,
the drain's signals and samples."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Lent",
    "Observation",
    "PooledBackend",
    "SessionGroup",
    "Sessions",
    "Signal",
    "Step",
    "UserState",
]

#: The options of a membership the admin may lend itself alone (PostgreSQL 16+).
_LENT_OPTIONS = ("", "INHERIT", "SET")


@dataclass(frozen=True)
class Lent:
    """A right the admin lends itself for one plan and takes back at its end: its own
    membership in *role* (*option* ""), or only the INHERIT or SET option of a
    membership it had granted itself before (PostgreSQL 16+)."""

    role: str
    option: str = ""

    def __post_init__(self) -> None:
        if self.option not in _LENT_OPTIONS:
            raise ValueError(f"unknown membership option {self.option!r}")

    def describe(self) -> str:
        """``membership in app_blue`` or ``SET on app_owner`` — for messages."""
        return f"{self.option} on {self.role}" if self.option else f"membership in {self.role}"


@dataclass(frozen=True)
class Step:
    """One statement of a plan: what to run, where, and what to say when it is refused.

    Engines read the catalog, *plan* a change as a list of steps (pure), and
    :meth:`Engine.execute` runs them: the one place an engine changes a
    database. ``rotate --dry-run`` prints the same steps instead.
    """

    #: The statement: a ``psycopg.sql`` composition, or text with ``%s`` params.
    sql: Any
    params: tuple[Any, ...] | None = None
    #: PostgreSQL: the database to run it in ('' = the admin URL's).
    database: str = ""
    #: What to tell the operator when the admin is refused.
    hint: str = ""
    #: Cleanup (the admin taking back a right it gave itself): runs even when
    #: an earlier step failed, and its own failure is ignored.
    cleanup: bool = False
    #: What this step lends the admin (a grant to itself that a cleanup step of the
    #: same plan takes back): recorded as a lease before the plan's first step, so
    #: that a run that dies before the cleanup leaves it to the next one to take back.
    lends: Lent | None = None


@dataclass(frozen=True)
class UserState:
    """Whether a login user exists and may log in."""

    name: str
    exists: bool
    can_login: bool = False


@dataclass(frozen=True)
class SessionGroup:
    """Open sessions of one user from one client address, application and database."""

    client: str
    application: str
    count: int
    #: The database they are connected to ('' when the server does not say).
    database: str = ""
    #: Wall-clock start of the oldest session of the group (None when unknown).
    started: float | None = None
    #: Seconds every session of the group has been idle (no statement running);
    #: None when one of them is active or the server does not say.
    idle_for: float | None = None
    #: Each session's backend pid and when it last began or ended a statement (or logged
    #: in), on the server's clock (PostgreSQL ``state_change``): it moves whenever the
    #: session runs anything. Empty when the server does not say.
    changes: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class PooledBackend:
    """A server connection a pooler (PgBouncer) holds, as the server sees it: the
    backend's process id and the TCP port it was opened from (None over a Unix
    socket), so that a session is taken for the pooler's only when both match."""

    pid: int
    port: int | None


@dataclass(frozen=True)
class Sessions:
    """A sample of one user's open sessions."""

    groups: tuple[SessionGroup, ...] = ()

    @property
    def count(self) -> int:
        """The number of open sessions."""
        return sum(g.count for g in self.groups)

    def busy(self) -> Sessions:
        """These sessions but the groups all idle (a pooler's pool, behind RDS Proxy)."""
        return Sessions(tuple(g for g in self.groups if g.idle_for is None))

    def describe(self, limit: int = 3) -> str:
        """``2 from 10.0.0.5 (api), 1 from local (psql)`` — for messages."""
        parts = [f"{g.count} from {g.client} ({g.application or '-'})" for g in self.groups]
        if len(parts) > limit:
            parts = [*parts[:limit], f"{len(parts) - limit} more"]
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Signal:
    """One way a server shows the drain that a user is in use."""

    #: e.g. ``pg_stat_statements``, ``performance_schema.accounts``.
    name: str
    #: True for a cumulative count (sees a login that came and went between
    #: two samples); False for a view of open sessions.
    cumulative: bool
    #: Whether this server offers it to the admin now.
    available: bool
    #: What it sees when available; otherwise the exact step that enables it.
    detail: str = ""
    #: A cumulative signal that counts statements, not only logins: it sees a client
    #: that reuses a connection a pooler keeps open (RDS Proxy).
    statements: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "name": self.name,
            "cumulative": self.cumulative,
            "available": self.available,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Observation:
    """One sample of a user on one server: open sessions and cumulative signals.

    ``counters`` maps each available cumulative signal to a fingerprint of the
    user's count: any change between two samples (up, down, or a reset)
    means someone used the user in between.

    The counters are read before the sessions, so that a count never runs ahead
    of the session list: a session that a count includes is in the list, or left
    before it was read. What a session does between the two reads (its last
    statement, MySQL's count of its quit) shows in the next observation's
    counters, after the list saw it go: the legacy log allows for that one sample.
    Read the other way round, a new session's first statement could be counted
    before the list shows the session, and the log would take it for another client.
    """

    sessions: Sessions
    counters: Mapping[str, Hashable] = field(default_factory=dict)
    #: The user's statements whose calls grew since the same engine's previous
    #: observation of the user (PostgreSQL ``pg_stat_statements``): ``(query
    #: text, calls since then)``, most grown first; empty at the first one.
    statements: tuple[tuple[str, int], ...] = ()
    #: Wall-clock time the server (re)started, so that evidence kept across
    #: runs is not trusted past a restart (None when unknown).
    started: float | None = None
    #: The cumulative signals of this server that count nothing now, each with why and
    #: how to turn it on again (a counter that stops during a drain is no quiet).
    silent: Mapping[str, str] = field(default_factory=dict)
    #: Which admin connection read it (they are numbered as they are opened): a new
    #: one may have reached a server that restarted since the last observation.
    connection: int | None = None
