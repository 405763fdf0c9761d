"""Who connects: the admin connection, logging in as a client, and keeping secrets out of
messages.

Every phase of a rotation uses this side of an engine; :meth:`Connector.verify`
is all that *verify* needs of it.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self, TypeVar

from ..errors import ConnectFailed, DatabaseUnavailable, EngineError, UsageError, is_read_only
from ..urls import DbUrl
from .redact import Redactor

T = TypeVar("T")

#: Numbers for admin connections, as observations name the one that read them.
CONNECTIONS = itertools.count(1)

__all__ = [
    "CONNECTIONS",
    "DB_TIMEOUT_ENV",
    "Connector",
    "Refusal",
    "connect_error",
    "default_connect_timeout",
    "default_statement_timeout",
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


def default_connect_timeout() -> float:
    """Seconds a connect may take: ``CREDFLIP_DB_TIMEOUT``, else 10."""
    return _timeout(10.0)


def default_statement_timeout() -> float:
    """Seconds one statement's answer may take: ``CREDFLIP_DB_TIMEOUT``, else 30."""
    return _timeout(30.0)


class Refusal(NamedTuple):
    """What a server refused at connect, as its engine reads the driver's error."""

    #: :class:`~credflip.errors.AuthenticationFailed`, ``InsufficientPrivilege``, or
    #: ``ConnectFailed`` (no such database).
    error: type[EngineError]
    #: What to do about it.
    advice: str
    #: Said instead of the driver's own message, when that is unhelpful.
    said: str | None = None

    @classmethod
    def no_database(cls) -> Refusal:
        """The URL names a database the server does not have."""
        return cls(ConnectFailed, "check the database name in the URL")


def connect_error(
    product: str, what: str, where: str, message: str, refusal: Refusal | None
) -> EngineError:
    """The error of a failed connect, worded alike for every engine: *refusal* is what the
    server refused (None: it could not be reached); *message* the driver's, scrubbed."""
    if refusal is None:
        return DatabaseUnavailable(
            f"cannot connect {what} to {product} at {where}: {message}; check host, port "
            f"and that the server is running"
        )
    said = message if refusal.said is None else refusal.said
    return refusal.error(f"{what} was refused at {where}: {said}; {refusal.advice}")


@dataclass
class Connector(Redactor, abc.ABC):
    """Connections through an admin URL, and logins with any other URL."""

    admin_url: DbUrl
    #: Seconds to wait for a connection; then :class:`DatabaseUnavailable`.
    connect_timeout: float = field(default_factory=default_connect_timeout)
    #: Seconds to wait for one statement's answer, enforced by the client: a
    #: frozen server (``SIGSTOP``, a dead host behind a live load balancer)
    #: neither answers nor closes the socket, and TCP keepalives do not notice.
    statement_timeout: float = field(default_factory=default_statement_timeout)
    _secrets: list[str] = field(default_factory=list, repr=False)
    _conn: Any = field(default=None, repr=False)
    #: Values that hold for as long as one admin connection does (see :meth:`per_connection`).
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    #: The driver's base exception class.
    driver_error: ClassVar[type[Exception]] = Exception

    # -- the admin connection: one place for both drivers ------------------

    @property
    def conn(self) -> Any:
        """The admin connection, opened on first use (and again after it broke)."""
        if self._conn is None or not self._is_open(self._conn):
            self._memo.clear()
            self._conn = self._connect(self.admin_url, what="the admin URL")
        return self._conn

    def per_connection(self, key: str, compute: Callable[[], T]) -> T:
        """*compute()* once per admin connection: a value such as the server's start
        time cannot change while the connection lives (a restart ends it)."""
        self.conn  # noqa: B018 - open it first: opening one clears the values of the last
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the admin connection."""
        self._memo.clear()
        conn, self._conn = self._conn, None
        if conn is not None and self._is_open(conn):
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abc.abstractmethod
    def _connect(self, url: DbUrl, *, what: str) -> Any:
        """A DBAPI connection with *url*; errors translated, naming *what*."""

    @staticmethod
    @abc.abstractmethod
    def _is_open(conn: Any) -> bool:
        """Whether a connection of this driver is still usable."""

    # -- clients ---------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A DBAPI connection with *url*, as an application would open it."""

    def verify(self, url: DbUrl, *, probe: str | None = None) -> None:
        """Log in with exactly *url*; run ``SELECT 1``, then *probe* (rolled back) with the
        lock and statement timeouts of a plan (:meth:`_probe_limits`)."""
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
                        for statement, params in self._probe_limits():
                            cur.execute(statement, params)
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

    def _probe_limits(self) -> list[tuple[Any, Any]]:
        """The statements (and their parameters) that bound how long the probe may wait for
        a lock and run: the operator's SQL may wait behind the application's locks too."""
        return []

    @abc.abstractmethod
    def _begin(self, conn: Any) -> None:
        """Start a transaction on *conn* (which is in autocommit mode)."""

    # -- a server that went away -------------------------------------------

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
        return _read_only(self, exc, conn, where) if is_read_only(exc) else None

    @abc.abstractmethod
    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        """Whether driver error *exc* means the connection (not the statement) failed."""


def _read_only(
    connector: Connector, exc: BaseException, conn: Any, where: str
) -> DatabaseUnavailable:
    """A write refused by a read-only server, as worth retrying as a lost connection.

    In a failover the writer's endpoint may still reach the old writer for a
    while: the admin connection (*conn* None or the admin's) is closed, so the
    next try connects again and resolves the endpoint anew.
    """
    if conn is None or conn is connector._conn:
        connector.close()
    return DatabaseUnavailable(
        f"the server at {where} refuses writes, it is read-only ({connector._diag(exc)}): a "
        f"failover may be under way, or the admin URL names a reader"
    )
