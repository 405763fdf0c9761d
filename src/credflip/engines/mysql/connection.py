"""MySQL and MariaDB connections through PyMySQL: connect, translate driver errors, run a
statement (or a planned :class:`~..values.Step`) as the admin.

The other parts of the engine (:mod:`.catalog`, :mod:`.grants`,
:mod:`.observe`) build on :class:`MysqlConnection` and reach the server only
through its ``_run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql
import pymysql.cursors

from ...errors import (
    AuthenticationFailed,
    EngineError,
    InsufficientPrivilege,
    LockTimeout,
    is_auth_failure,
)
from ...urls import DbUrl, pymysql_kwargs, scrub
from ..base import Engine, Step
from ..connector import Refusal, connect_error
from ..locks import Blocker, BlockerWatch, StatementWaited, log, server_timeout
from . import locks as my_locks
from .driver import connect

__all__ = ["MysqlConnection"]

_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370, 1410, 1698, 1095}
# Client errors of a lost or unreachable server (2002-2013, 2055), the server
# shutting down (1053), a killed connection (1927) and too many connections
# (1040, 1203): the statement did not fail, the connection did.
_LOST_ERRORS = {1040, 1053, 1203, 1927, 2002, 2003, 2006, 2013, 2055}
#: A lock wait timeout (metadata or row lock), and the server's statement timeout
#: (MariaDB max_statement_time, MySQL max_execution_time).
_LOCK_WAIT_TIMEOUT = 1205
_STATEMENT_TIMEOUT = {1969, 3024}


class MysqlConnection(Engine):
    """The admin's connection to MySQL or MariaDB, and statements run on it."""

    driver_error = pymysql.err.MySQLError
    #: Whether the operator was told that the lock timeout is waited in whole seconds.
    _noted_whole_seconds: bool = False

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> Any:
        kwargs = pymysql_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        # Socket timeouts: a frozen server neither answers nor closes.
        kwargs.setdefault("read_timeout", max(1, round(self.statement_timeout)))
        kwargs.setdefault("write_timeout", max(1, round(self.statement_timeout)))
        try:
            return connect(**kwargs, autocommit=True, program_name="credflip")
        except pymysql.err.MySQLError as exc:
            raise self._connect_error(exc, url, what) from exc

    def _connect_error(self, exc: BaseException, url: DbUrl, what: str) -> EngineError:
        message, where = self._diag(exc), f"{url.host}:{url.port or 3306}"
        return connect_error("MySQL", what, where, message, _refusal(exc))

    @staticmethod
    def _is_open(conn: Any) -> bool:
        return bool(conn.open)

    @staticmethod
    def _message(exc: BaseException) -> str:
        args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
        return str(args[1]) if len(args) > 1 else str(exc)

    def _run(
        self, query: str, args: Sequence[Any] | None = None, *, hint: str = "", conn: Any = None
    ) -> list[Any]:
        """Execute one statement as admin (on *conn*, else the admin connection); translate
        driver errors."""
        target = conn if conn is not None else self.conn
        try:
            with target.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall()) if cur.description else []
        except pymysql.err.MySQLError as exc:
            if _errno(exc) == 2013 and "timed out" in str(exc):
                # The client gave up: have the server stop the statement too.
                my_locks.kill_later(self._watch_connection, target.thread_id())
            if _errno(exc) == _LOCK_WAIT_TIMEOUT:
                raise LockTimeout(
                    f"MySQL stopped a statement that waited for a lock: {self._diag(exc)}"
                ) from exc
            url = self.admin_url
            lost = self._lost(exc, None, late=False, where=f"{url.host}:{url.port or 3306}")
            if lost is not None:
                raise lost from exc
            if _errno(exc) in _PRIVILEGE_ERRORS or is_auth_failure(exc):
                raise InsufficientPrivilege(
                    f"admin user {self.admin_url.user!r} was refused: {self._diag(exc)}"
                    + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
                ) from exc
            raise EngineError(f"MySQL refused a statement: {self._diag(exc)}") from exc

    def _execute(self, step: Step, watch: BlockerWatch) -> None:
        conn = self.conn
        self._settle(step, conn, lambda s: self._run(s.sql, s.params, conn=conn))
        with watch.during(conn.thread_id()) as seen:
            try:
                self._run(step.sql, step.params, hint=step.hint, conn=conn)
            except LockTimeout as exc:
                raise StatementWaited(str(exc), list(seen)) from exc
            except EngineError as exc:
                # MariaDB's account statements wait for the grant tables' locks past
                # lock_wait_timeout; the statement timeout stops them.
                if seen and exc.__cause__ and _errno(exc.__cause__) in _STATEMENT_TIMEOUT:
                    raise StatementWaited(str(exc), list(seen)) from exc
                raise

    def _limit_steps(self) -> list[Step]:
        note = my_locks.whole_seconds(self.lock_wait.timeout)
        if note is not None and not self._noted_whole_seconds:
            self._noted_whole_seconds = True
            log.warning("credflip: warning: %s", note)
        return my_locks.limit_steps(
            self.lock_wait.timeout, server_timeout(self.statement_timeout), mariadb=self.is_mariadb
        )

    def _blockers(self, conn: Any, waiter: Any) -> list[Blocker]:
        def run(query: str, args: Sequence[Any]) -> list[Any]:
            return self._run(query, args, conn=conn)

        return my_locks.blockers(run, int(waiter), server=str(conn.get_server_info()))

    def _watch_connection(self) -> Any:
        return self._connect(self.admin_url, what="another admin connection")

    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        # A read timeout is error 2013 "Lost connection ... (timed out)".
        return _errno(exc) in _LOST_ERRORS

    def render(self, step: Step) -> str:
        """The statement as sent, with passwords and hashes masked."""
        with self.conn.cursor() as cur:
            text = cur.mogrify(step.sql, step.params)
        return scrub(str(text), self._known_secrets())

    @property
    def is_mariadb(self) -> bool:
        """True when the server is MariaDB."""
        return "mariadb" in str(self.conn.get_server_info()).lower()

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A PyMySQL connection as an application would open it."""
        kwargs = pymysql_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, int(timeout)))
        return connect(**kwargs)

    def _begin(self, conn: Any) -> None:
        conn.begin()


def _errno(exc: BaseException) -> int:
    """The server's error number of a PyMySQL error (0 when it has none)."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return args[0] if args and isinstance(args[0], int) else 0


def _refusal(exc: BaseException) -> Refusal | None:
    """What the server refused when a connect failed with *exc* (None: not reached)."""
    code = _errno(exc)
    if is_auth_failure(exc):
        return Refusal(
            AuthenticationFailed, "check the user and password, or whether the account is locked"
        )
    if code == 1044:
        return Refusal(
            InsufficientPrivilege,
            "grant that user access to the database, or name another one in the URL",
        )
    if code == 1049:
        return Refusal.no_database()
    return None
