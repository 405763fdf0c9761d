"""What a database engine must offer a rotation.

An engine works through an *admin* URL: a user that can create roles and give
them rights, but need not be a superuser (RDS and Aurora do not hand those
out). Every statement an engine sends quotes identifiers and literals through
its driver; no password is ever sent in plaintext where the server allows a
client-side hash.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from ..errors import DatabaseUnavailable, EngineError, UsageError
from ..urls import DbUrl, scrub

__all__ = [
    "DB_TIMEOUT_ENV",
    "Engine",
    "Observation",
    "SessionGroup",
    "Sessions",
    "Signal",
    "Step",
    "UserState",
]


#: Seconds credflip's own database connections wait for a connect or for one
#: statement's answer, when set (default: 10 s to connect, 30 s per statement).
DB_TIMEOUT_ENV = "CREDFLIP_DB_TIMEOUT"


def _timeout(default: float) -> float:
    text = os.environ.get(DB_TIMEOUT_ENV)
    if not text:
        return default
    from ..durations import parse_duration

    value = parse_duration(text, what=DB_TIMEOUT_ENV)
    if value <= 0:
        raise UsageError(f"{DB_TIMEOUT_ENV} must be positive, like 10s")
    return value


def _connect_timeout() -> float:
    return _timeout(10.0)


def _statement_timeout() -> float:
    return _timeout(30.0)


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


@dataclass(frozen=True)
class UserState:
    """Whether a login user exists and may log in."""

    name: str
    exists: bool
    can_login: bool = False


@dataclass(frozen=True)
class SessionGroup:
    """Open sessions of one user from one client address and application."""

    client: str
    application: str
    count: int


@dataclass(frozen=True)
class Sessions:
    """A sample of one user's open sessions."""

    groups: tuple[SessionGroup, ...] = ()

    @property
    def count(self) -> int:
        """The number of open sessions."""
        return sum(g.count for g in self.groups)

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
    """

    sessions: Sessions
    counters: Mapping[str, Hashable] = field(default_factory=dict)


@dataclass
class Engine(abc.ABC):
    """A database engine driven through an admin URL."""

    #: Registry name, e.g. ``"postgresql"``.
    name: ClassVar[str]
    #: URL schemes (without driver suffix) this engine serves.
    schemes: ClassVar[tuple[str, ...]]

    admin_url: DbUrl
    #: Seconds to wait for a connection; then :class:`DatabaseUnavailable`.
    connect_timeout: float = field(default_factory=_connect_timeout)
    #: Seconds to wait for one statement's answer, enforced by the client: a
    #: frozen server (``SIGSTOP``, a dead host behind a live load balancer)
    #: neither answers nor closes the socket, and TCP keepalives do not notice.
    statement_timeout: float = field(default_factory=_statement_timeout)
    _secrets: list[str] = field(default_factory=list, repr=False)
    _conn: Any = field(default=None, repr=False)

    # -- the admin connection: one place for both drivers ------------------

    @property
    def conn(self) -> Any:
        """The admin connection, opened on first use (and again after it broke)."""
        if self._conn is None or not self._is_open(self._conn):
            self._conn = self._connect(self.admin_url, what="the admin URL")
        return self._conn

    def close(self) -> None:
        """Close the admin connection."""
        conn, self._conn = self._conn, None
        if conn is not None and self._is_open(conn):
            conn.close()

    def _diag(self, exc: BaseException) -> str:
        """The first line of a driver error, scrubbed of every known secret."""
        text = self._message(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        return scrub(first, self._known_secrets())

    def _known_secrets(self) -> list[str]:
        return [*self._secrets, *([self.admin_url.password] if self.admin_url.password else [])]

    @staticmethod
    @abc.abstractmethod
    def _is_open(conn: Any) -> bool:
        """Whether a connection of this driver is still usable."""

    @staticmethod
    @abc.abstractmethod
    def _message(exc: BaseException) -> str:
        """The human part of a driver error."""

    # -- admin -----------------------------------------------------------

    @abc.abstractmethod
    def check_admin(self) -> None:
        """Connect as admin and check it may manage users; raise naming the missing right."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- users -----------------------------------------------------------

    @abc.abstractmethod
    def user_state(self, user: str) -> UserState:
        """Return whether *user* exists and may log in."""

    @abc.abstractmethod
    def adopt(self, *, active: str, inactive: str, group: str | None) -> str | None:
        """Convert a database so that *active* and *inactive* can take turns.

        Creates the group role (when the engine uses one) that owns the
        objects, moves ownership and rights of the users to it, and creates
        *inactive* (without login) when missing. Returns the group's name.
        """

    @abc.abstractmethod
    def lock_user(self, user: str) -> None:
        """Stop *user* from logging in; reversible with :meth:`unlock_user`."""

    @abc.abstractmethod
    def unlock_user(self, user: str) -> None:
        """Allow *user* to log in again."""

    @abc.abstractmethod
    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """Drop *user*, refusing with a clear message when that would lose anything.

        *keep* is the active user, which must keep every right *user* had.
        """

    # -- plans -----------------------------------------------------------

    def execute(self, steps: Sequence[Step]) -> None:
        """Run *steps* in order: the one place an engine changes a database.

        At the first refusal the remaining cleanup steps still run (their own
        failures ignored), then the refusal is raised.
        """
        failure: EngineError | None = None
        for step in steps:
            if failure is not None and not step.cleanup:
                continue
            try:
                self._execute(step)
            except EngineError as exc:
                if step.cleanup:
                    continue
                failure = exc
        if failure is not None:
            raise failure

    @abc.abstractmethod
    def _execute(self, step: Step) -> None:
        """Run one step as the admin; translate driver errors (naming ``step.hint``)."""

    @abc.abstractmethod
    def render(self, step: Step) -> str:
        """The step as the server would receive it, every known secret shown as ``***``."""

    @abc.abstractmethod
    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """The statements :meth:`prepare_user` runs."""

    def prepare_user(self, user: str, password: str, *, like: str, group: str | None) -> None:
        """Create or update *user* with *password*, allow login, and give it the rights of *like*.

        Must not change *like* in any way.
        """
        self.execute(self.plan_prepare(user, password, like=like, group=group))

    @abc.abstractmethod
    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """The statements that retire *user*: lock it (undoing the drain's watch) or drop it.

        *watched*: plan as if the drain had (True) or had not (False) made
        the user's logins countable; None reads the current state.
        """

    def plan_watch(self, user: str, group: str | None) -> list[Step]:
        """The statements :meth:`begin_watch` runs (none where logins count per user)."""
        return []

    # -- clients ---------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A DBAPI connection with *url*, as an application would open it."""

    def verify(self, url: DbUrl, *, probe: str | None = None) -> None:
        """Log in with exactly *url*; run ``SELECT 1``, then *probe* (rolled back)."""
        if url.password:
            self.remember_secret(url.password)
        what = f"user {url.user!r}"
        conn = self._connect(url, what=what)
        try:
            with self._guard(conn) as late:
                cur = conn.cursor()
                cur.execute("SELECT 1")
                if probe:
                    self._begin(conn)
                    try:
                        cur.execute(probe)
                    finally:
                        conn.rollback()
        except self.driver_error as exc:
            lost = self._lost(exc, conn, late=bool(late), where=f"{url.host}:{url.port or ''}")
            if lost is not None:
                raise lost from exc
            raise EngineError(f"probe failed for {what}: {self._diag(exc)}") from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _guard(self, conn: Any) -> Iterator[list[bool]]:
        """Bound a blocking call on *conn* by :attr:`statement_timeout`.

        Yields a list that holds ``True`` once the guard gave up on the
        server. The default relies on the driver's own read timeout.
        """
        yield []

    def _lost(
        self, exc: BaseException, conn: Any, *, late: bool, where: str
    ) -> DatabaseUnavailable | None:
        """The error to raise when *exc* means the server went away (or went silent)."""
        if late:
            return DatabaseUnavailable(
                f"the server at {where} did not answer within "
                f"{self.statement_timeout:g}s (frozen, overloaded or cut off); credflip gave up "
                f"on that connection"
            )
        if self._connection_lost(exc, conn):
            return DatabaseUnavailable(
                f"lost the connection to the server at {where}: {self._diag(exc)}; it may be "
                f"restarting or failing over"
            )
        return None

    @abc.abstractmethod
    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        """Whether driver error *exc* means the connection (not the statement) failed."""

    #: The driver's base exception class.
    driver_error: ClassVar[type[Exception]] = Exception

    @abc.abstractmethod
    def _connect(self, url: DbUrl, *, what: str) -> Any:
        """A DBAPI connection with *url*; errors translated, naming *what*."""

    @abc.abstractmethod
    def _begin(self, conn: Any) -> None:
        """Start a transaction on *conn* (which is in autocommit mode)."""

    @abc.abstractmethod
    def sessions(self, user: str) -> Sessions:
        """Sample the open sessions of *user*."""

    @abc.abstractmethod
    def terminate(self, user: str) -> int:
        """End every session of *user*; return how many were ended."""

    # -- the drain ---------------------------------------------------------

    @abc.abstractmethod
    def signals(self) -> list[Signal]:
        """What this server can show of a user's use, available or not (with how to enable)."""

    @abc.abstractmethod
    def observe(self, user: str) -> Observation:
        """Sample *user*: open sessions and the fingerprints of every available counter."""

    def enable_signals(self) -> list[str]:
        """Turn on what the admin may turn on without a restart; say what was done."""
        return []

    def count_problem(self, user: str, group: str | None) -> str | None:
        """Why the counters cannot attribute *user*'s logins to it, or None when they can."""
        return None

    def begin_watch(self, user: str, group: str | None) -> None:
        """Make *user*'s new logins count as its own (called once the pointer moved away)."""
        self.execute(self.plan_watch(user, group))

    def end_watch(self, user: str, group: str | None) -> None:
        """Undo :meth:`begin_watch` and hand anything the user created meanwhile to *group*."""
        return

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

    # -- helpers ---------------------------------------------------------

    def remember_secret(self, secret: str) -> None:
        """Note a secret so that driver messages can be scrubbed of it."""
        self._secrets.append(secret)
