"""PostgreSQL connections: connect, translate driver errors, guard every statement against
a silent server, and run a statement (or a planned :class:`~..values.Step`) in a database.

The other parts of the engine (:mod:`.admin_rights`, :mod:`.grants`,
:mod:`.adopt`, :mod:`.observe`) build on :class:`PgConnection` and reach the
server only through its ``_run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ...errors import (
    AuthenticationFailed,
    EngineError,
    InsufficientPrivilege,
    LockTimeout,
    is_auth_failure,
)
from ...urls import DbUrl, libpq_kwargs, scrub
from ..base import Engine, Step
from ..connector import Refusal, connect_error
from . import catalog

__all__ = ["PgConnection"]

_Query = str | bytes | sql.SQL | sql.Composed

#: SQLSTATEs of a server that is shutting down, crashed or not yet accepting.
_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


class PgConnection(Engine):
    """The admin's connections to PostgreSQL through psycopg 3, and statements run on them."""

    driver_error = psycopg.Error
    #: While a plan runs (:class:`~.locks.PgPlanRunner`): its connections to other
    #: databases, kept open between its steps.
    _held: dict[str, psycopg.Connection[tuple[Any, ...]]] | None = None

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs = libpq_kwargs(url)
        kwargs.setdefault("connect_timeout", max(2, round(self.connect_timeout)))
        kwargs.setdefault("application_name", "credflip")
        # A peer that vanished (host down, network cut) is noticed by TCP;
        # a frozen server is caught by the statement guard.
        kwargs.setdefault("keepalives", 1)
        kwargs.setdefault("keepalives_idle", 10)
        kwargs.setdefault("keepalives_interval", 5)
        kwargs.setdefault("keepalives_count", 3)
        kwargs.setdefault("tcp_user_timeout", int(self.statement_timeout * 1000))
        try:
            return psycopg.connect(autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise self._connect_error(exc, url, what) from exc

    def _connect_error(self, exc: BaseException, url: DbUrl, what: str) -> EngineError:
        message, where = self._diag(exc), f"{url.host}:{url.port or 5432}"
        return connect_error("PostgreSQL", what, where, message, _refusal(exc, url, message))

    @staticmethod
    def _is_open(conn: Any) -> bool:
        return not conn.closed

    @staticmethod
    def _message(exc: BaseException) -> str:
        return str(exc).strip().removeprefix("connection failed: ")

    def _begin(self, conn: Any) -> None:
        conn.autocommit = False

    @contextlib.contextmanager
    def _database(self, dbname: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An admin connection to *dbname* (the main one when it is the admin's database)."""
        if dbname == self._main:
            yield self.conn
            return
        if self._held is not None and dbname in self._held and not self._held[dbname].closed:
            yield self._held[dbname]  # a plan's, kept open until it ends
            return
        url = dataclasses.replace(self.admin_url, database=dbname)
        conn = self._connect(url, what=f"the admin to database {dbname!r}")
        if self._held is not None:
            self._held[dbname] = conn
            yield conn
            return
        try:
            yield conn
        finally:
            conn.close()

    def _run(
        self,
        query: _Query,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        conn: psycopg.Connection[tuple[Any, ...]] | None = None,
        hint: str = "",
    ) -> list[tuple[Any, ...]]:
        """Execute one statement as admin; translate driver errors."""
        target = conn if conn is not None else self.conn
        late: list[bool] = []
        try:
            with self._guard(target) as late:
                cur = target.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.LockNotAvailable as exc:
            raise LockTimeout(f"PostgreSQL stopped a statement: {self._diag(exc)}") from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} was refused: {self._diag(exc)}"
                + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
            ) from exc
        except psycopg.Error as exc:
            lost = self._lost(exc, target, late=bool(late), where=_where(target))
            if lost is not None:
                raise lost from exc
            raise EngineError(f"PostgreSQL refused a statement: {self._diag(exc)}") from exc

    @contextlib.contextmanager
    def _guard(self, conn: Any) -> Iterator[list[bool]]:
        """Give up on *conn* when the server stays silent past the statement timeout."""
        admin = functools.partial(self._connect, self.admin_url, what="the admin (to cancel)")
        with _silence_guard(conn, self.statement_timeout, admin) as late:
            yield late

    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        if getattr(exc, "sqlstate", None) in _GOING_AWAY:
            return True
        return isinstance(exc, psycopg.OperationalError) and bool(conn.closed)

    def render(self, step: Step) -> str:
        """The statement as sent, with the password, verifier and admin password masked."""
        text = step.sql if isinstance(step.sql, str) else step.sql.as_string(self.conn)
        return scrub(str(text), self._known_secrets())

    @property
    def _main(self) -> str:
        return self.admin_url.database or self.admin_url.user

    def _in(self, dbname: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Call catalog *func* with a runner bound to database *dbname*."""
        with self._database(dbname) as conn:
            return func(functools.partial(self._run, conn=conn), *args, **kwargs)

    # -- catalog reads on the admin connection ------------------------------

    def _exists(self, role: str) -> bool:
        return catalog.exists(self._run, role)

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A psycopg connection as an application would open it."""
        return psycopg.connect(**libpq_kwargs(url), connect_timeout=max(1, int(timeout)))


def _refusal(exc: BaseException, url: DbUrl, message: str) -> Refusal | None:
    """What the server refused when a connect with *url* failed with *exc* (*message*:
    its scrubbed first line); None when it was not reached."""
    low, sqlstate = message.lower(), getattr(exc, "sqlstate", None)
    if is_auth_failure(exc):
        if sqlstate == "28P01" or "password authentication failed" in low:
            return Refusal(
                AuthenticationFailed,
                "check the user and password",
                said=f"password authentication failed for user {url.user!r}",
            )
        if "sasl authentication failed" in low:  # PgBouncer's word for a refused SCRAM login
            return Refusal(
                AuthenticationFailed,
                "PgBouncer does not know this password for the user (its auth_query finds no "
                "login user of that name, or its auth_file holds another secret)",
                said=f"SASL authentication failed for user {url.user!r} at PgBouncer",
            )
        return Refusal(AuthenticationFailed, "the user is locked, lacks LOGIN or does not exist")
    if sqlstate == "3D000" or ("database" in low and "does not exist" in low):
        return Refusal.no_database()
    return None


def _where(conn: Any) -> str:
    """``host:port`` of *conn*, even when it broke."""
    try:
        return f"{conn.info.host}:{conn.info.port}"
    except psycopg.Error:
        return "?"


def _socket_of(conn: Any) -> int | None:
    try:
        return int(conn.pgconn.socket)
    except psycopg.Error:
        return None


@contextlib.contextmanager
def _silence_guard(conn: Any, timeout: float, admin: Callable[[], Any]) -> Iterator[list[bool]]:
    """Give up on *conn* when the server stays silent past the statement timeout.

    libpq has no client-side timeout for a statement, and a stopped server
    keeps its socket open (the kernel still acknowledges our packets). A
    timer shuts the socket down, so the waiting call fails at once with
    "server closed the connection" instead of hanging. It then has the server
    cancel the statement too (see :func:`_cancel_in_background`): a backend
    waiting for a lock does not notice that its client left, and would keep
    its place in the lock queue (and run the statement once it got the lock).
    """
    late: list[bool] = []
    fd = _socket_of(conn)
    if fd is None:  # already closed: the call fails by itself
        yield late
        return
    pid = conn.info.backend_pid

    def give_up() -> None:
        late.append(True)
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        _cancel_in_background(admin, pid)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield late
    finally:
        timer.cancel()


def _cancel_in_background(admin: Callable[[], Any], pid: int) -> None:
    """``pg_cancel_backend(pid)`` from a new admin connection (``admin()``), in a thread of
    its own: libpq's own cancel request blocks (holding the interpreter) for as long as a
    frozen server does not answer, and a new connection times out."""

    def cancel() -> None:
        with contextlib.suppress(Exception), contextlib.closing(admin()) as other:
            other.execute("SELECT pg_cancel_backend(%s)", [pid])

    threading.Thread(target=cancel, name="credflip-cancel", daemon=True).start()
