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

from ...errors import AuthenticationFailed, EngineError, InsufficientPrivilege, is_auth_failure
from ...urls import DbUrl, pymysql_kwargs, scrub
from ..base import Engine, Step
from ..connector import Refusal, connect_error

__all__ = ["MysqlConnection"]

_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370, 1410, 1698, 1095}
# Client errors of a lost or unreachable server (2002-2013, 2055), the server
# shutting down (1053), a killed connection (1927) and too many connections
# (1040, 1203): the statement did not fail, the connection did.
_LOST_ERRORS = {1040, 1053, 1203, 1927, 2002, 2003, 2006, 2013, 2055}


class MysqlConnection(Engine):
    """The admin's connection to MySQL or MariaDB, and statements run on it."""

    driver_error = pymysql.err.MySQLError

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> Any:
        kwargs = pymysql_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        # Socket timeouts: a frozen server neither answers nor closes.
        kwargs.setdefault("read_timeout", max(1, round(self.statement_timeout)))
        kwargs.setdefault("write_timeout", max(1, round(self.statement_timeout)))
        try:
            return pymysql.connect(**kwargs, autocommit=True, program_name="credflip")
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

    def _run(self, query: str, args: Sequence[Any] | None = None, *, hint: str = "") -> list[Any]:
        """Execute one statement as admin; translate driver errors."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall()) if cur.description else []
        except pymysql.err.MySQLError as exc:
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

    def _execute(self, step: Step) -> None:
        self._run(step.sql, step.params, hint=step.hint)

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
        return pymysql.connect(**kwargs)

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
