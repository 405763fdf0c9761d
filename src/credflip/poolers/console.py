"""PgBouncer's admin console: one connection, ``SHOW`` commands, errors in credflip's words.

The console is PgBouncer's own pseudo-database ``pgbouncer``: it speaks only the
simple query protocol (psycopg uses it for a statement without parameters that
it does not prepare, and this connection prepares none),
takes no transactions (the connection is in autocommit), and lets a user of
``stats_users`` run every ``SHOW`` command credflip needs. Rows are read by
column name, so that the columns later versions added change nothing.

A console that stops answering (a frozen process, a cut network) must not
hang a drain: a timer shuts the socket down after ``statement_timeout`` and the
call fails as unreachable, as the engines' statement guard does. Its timeouts
are the engines': ``CREDFLIP_DB_TIMEOUT`` (10 s to connect, 30 s per answer
without it), or the admin engine's own, which the Lambda bounds by its margin
(:func:`credflip.rotation.fleet.env_pooler`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engines.connector import default_connect_timeout, default_statement_timeout
from ..errors import AuthenticationFailed, ConfigurationError, DatabaseUnavailable, EngineError
from ..silence import libpq_socket, silence_guard
from ..urls import DbUrl, libpq_kwargs, scrub

if TYPE_CHECKING:
    import psycopg

__all__ = ["Console"]

Row = dict[str, Any]


class Console:
    """PgBouncer's admin console, reached with *url* (``pgbouncer://USER:PASS@HOST:PORT/pgbouncer``)."""

    def __init__(
        self,
        url: DbUrl,
        *,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
    ) -> None:
        self.url = url
        #: Seconds to connect and to wait for one answer (default: as the engines').
        self.connect_timeout = (
            default_connect_timeout() if connect_timeout is None else connect_timeout
        )
        self.statement_timeout = (
            default_statement_timeout() if statement_timeout is None else statement_timeout
        )
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the console."""
        return f"{self.url.host}:{self.url.port or 6432}"

    def show(self, what: str) -> list[Row]:
        """``SHOW what`` (a fixed word such as ``CLIENTS``), one dict per row by column name."""
        import psycopg  # loaded with the first console, as the engines load their drivers

        conn = self._connection()
        late: list[bool] = []
        try:
            with silence_guard(libpq_socket(conn), self.statement_timeout) as late:
                cur = conn.execute(f"SHOW {what}")
                names = [c.name for c in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            self.close()
            if late:
                raise DatabaseUnavailable(
                    f"the PgBouncer console at {self.address} did not answer SHOW {what} within "
                    f"{self.statement_timeout:g}s"
                ) from exc
            if isinstance(exc, psycopg.OperationalError):
                raise DatabaseUnavailable(
                    f"lost the PgBouncer console at {self.address}: {self._said(exc)}"
                ) from exc
            raise EngineError(
                f"the PgBouncer console at {self.address} refused SHOW {what}: {self._said(exc)}; "
                f"its user must be in stats_users or admin_users"
            ) from exc

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        kwargs = libpq_kwargs(self.url)
        kwargs.update(
            dbname=self.url.database or "pgbouncer",
            connect_timeout=max(2, round(self.connect_timeout)),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            # Never prepared: the console refuses the extended protocol.
            self._conn = psycopg.connect(autocommit=True, prepare_threshold=None, **kwargs)
        except psycopg.Error as exc:
            raise self._connect_error(exc) from exc
        return self._conn

    def _connect_error(self, exc: BaseException) -> Exception:
        said = self._said(exc)
        low = said.lower()
        user = self.url.user
        if "authentication failed" in low:
            return AuthenticationFailed(
                f"the PgBouncer console at {self.address} refused user {user!r}: {said}; check "
                f"the pooler URL's user and password (the user's line in PgBouncer's auth_file)"
            )
        if "not allowed" in low or "no such user" in low or "no such database" in low:
            return ConfigurationError(
                f"the PgBouncer console at {self.address} refused user {user!r}: {said}; add "
                f"it to stats_users in pgbouncer.ini (and its line to auth_file), then RELOAD"
            )
        return DatabaseUnavailable(
            f"cannot connect to the PgBouncer console at {self.address}: {said}; check the "
            f"pooler URL's host and port, that PgBouncer is running and that its auth_file "
            f"has the user"
        )

    def _said(self, exc: BaseException) -> str:
        text = str(exc).strip().removeprefix("connection failed: ")
        first = text.splitlines()[0] if text else type(exc).__name__
        return scrub(first, [self.url.password] if self.url.password else [])

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()
