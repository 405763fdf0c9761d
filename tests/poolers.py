"""A private PgBouncer in front of a private PostgreSQL, for tests that rotate through one.

:class:`PrivatePgbouncer` runs Debian's ``pgbouncer`` on a random loopback port
(as the ``postgres`` OS user under root: PgBouncer refuses to run as root),
with ``auth_type = scram-sha-256`` and ``auth_query`` through a ``SECURITY
DEFINER`` lookup function, the mode PgBouncer's documentation recommends for
users whose passwords change: the function lives in a dedicated schema of each
application database (:meth:`PrivatePgbouncer.serve`), is owned by the
superuser, and only the ``auth_user`` may run it. The ``auth_file`` holds the
``auth_user`` (in plain text: PgBouncer logs in to PostgreSQL as it) and the
console users (their SCRAM secrets). Deleted on :meth:`PrivatePgbouncer.stop`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from client_threads import ClientThreads
from clusters import Cluster
from psycopg import sql

from credflip.demo.binaries import free_port
from credflip.engines.postgres import scram_verifier
from credflip.layout import Layout
from credflip.resolver import Resolver
from credflip.rotation import new_password
from credflip.stores.base import Store
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

#: The PostgreSQL role PgBouncer runs ``auth_query`` as (one per PgBouncer: each sets
#: its password).
AUTH_USER = "cft_pgb_auth"
#: Console users: one may only look (``stats_users``), the other may act (``admin_users``).
STATS_USER = "cft_pgb_stats"
ADMIN_USER = "cft_pgb_admin"
#: The schema of the lookup function in each application database.
LOOKUP_SCHEMA = "pgbouncer"

_serial = itertools.count(1)

# No row for a user that does not exist or may not log in (pg_shadow lists only
# LOGIN roles): PgBouncer then refuses the client as for a wrong password. (The
# PL/pgSQL example in PgBouncer's documentation returns a row of NULLs instead,
# which PgBouncer takes for a configuration error.)
LOOKUP_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.user_lookup(i_username text)
RETURNS TABLE (uname text, phash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT usename::text, passwd::text FROM pg_catalog.pg_shadow WHERE usename = i_username
$$
"""


def pgbouncer_binary() -> str:
    """The ``pgbouncer`` program: on PATH, else in /usr/sbin (where Debian installs it, off
    a non-root PATH) or /usr/bin, as ``tools/system-deps`` finds it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    assert found, "pgbouncer is not installed: run tools/system-deps test as root"
    return found


class PrivatePgbouncer:
    """``pgbouncer`` with its own folder and port, in front of *cluster*.

    Every database name goes to the same name on the cluster (``* = ...``).
    *settings* override the ``[pgbouncer]`` section (``pool_mode`` ...). Without
    *auth_query* PgBouncer knows only the users of its ``auth_file``: the console
    users and :attr:`users` (lines ``"name" "secret"``, see :meth:`set_users`).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        cluster: Cluster,
        pool_mode: str = "transaction",
        *,
        auth_query: bool = True,
        **settings: str,
    ) -> None:
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.auth_query = auth_query
        self.settings = settings
        self.auth_user = f"{AUTH_USER}{next(_serial)}"
        self.users: list[str] = []
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.auth_password = new_password()
        self.stats_password = new_password()
        self.admin_password = new_password()
        self._os_user: str | None = "postgres" if os.geteuid() == 0 else None

    # -- set-up ----------------------------------------------------------------

    def start(self) -> PrivatePgbouncer:
        self.root = Path(tempfile.mkdtemp(prefix="credflip-pgbouncer-"))
        self.cluster.create_role(self.auth_user, self.auth_password)
        self._write(self.root / "userlist.txt", self._userlist())
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            for path in (self.root, self.root / "userlist.txt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        last: AssertionError | None = None
        for _attempt in range(3):
            # A free port can be taken between our probe and PgBouncer's bind.
            self.port = free_port()
            self._write(self.root / "pgbouncer.ini", self._ini())
            try:
                return self._launch()
            except AssertionError as exc:
                last = exc
        self.stop()
        assert last is not None
        raise last

    def _userlist(self) -> str:
        with self.cluster.su() as conn:
            stats = scram_verifier(conn, STATS_USER, self.stats_password)
            admin = scram_verifier(conn, ADMIN_USER, self.admin_password)
        lines = [
            f'"{self.auth_user}" "{self.auth_password}"',
            f'"{STATS_USER}" "{stats}"',
            f'"{ADMIN_USER}" "{admin}"',
            *self.users,
        ]
        return "\n".join(lines) + "\n"

    def _ini(self) -> str:
        assert self.root is not None
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.root / "userlist.txt"),
            "pool_mode": self.pool_mode,
            "admin_users": ADMIN_USER,
            "stats_users": STATS_USER,
            "logfile": str(self.root / "pgbouncer.log"),
            "pidfile": str(self.root / "pgbouncer.pid"),
            "max_client_conn": "500",
            "default_pool_size": "40",
            # Tests log a color in again soon after a failed login.
            "server_login_retry": "1",
        }
        if self.auth_query:
            settings["auth_user"] = self.auth_user
            settings["auth_query"] = f"SELECT uname, phash FROM {LOOKUP_SCHEMA}.user_lookup($1)"
        settings.update(self.settings)
        lines = ["[databases]", f"* = host={self.cluster.pg.host} port={self.cluster.pg.port}"]
        lines += ["", "[pgbouncer]", *(f"{k} = {v}" for k, v in settings.items())]
        return "\n".join(lines) + "\n"

    def _write(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _launch(self) -> PrivatePgbouncer:
        assert self.root is not None
        self.process = subprocess.Popen(
            [pgbouncer_binary(), str(self.root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._os_user,
            group=self._os_user,
            cwd=self.root,
        )
        deadline = time.monotonic() + 30
        while True:  # poll until its console answers
            try:
                self.console().close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    self.process = None
                    log = self.log()[-500:]
                    raise AssertionError(f"pgbouncer exited at start: {log}") from None
                assert time.monotonic() < deadline, "pgbouncer did not answer within 30s"
                time.sleep(0.05)

    def serve(self, database: str) -> None:
        """Install the lookup function in *database* (auth_query runs in the target database)."""
        with self.cluster.su(database) as conn:
            schema = sql.Identifier(LOOKUP_SCHEMA)
            auth = sql.Identifier(self.auth_user)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL(LOOKUP_FUNCTION).format(schema=schema))
            function = sql.SQL("{}.user_lookup(text)").format(schema)
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, auth))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, auth))

    # -- use ---------------------------------------------------------------------

    def url(self, user: str, password: str | None, database: str) -> DbUrl:
        """A ``postgresql://`` URL through this PgBouncer."""
        return DbUrl("postgresql", self.host, user, password, self.port, database)

    def console_url(self, *, admin: bool = False) -> DbUrl:
        """The console as ``pgbouncer://`` (what ``init --pooler`` takes)."""
        user, password = (
            (ADMIN_USER, self.admin_password) if admin else (STATS_USER, self.stats_password)
        )
        return DbUrl("pgbouncer", self.host, user, password, self.port, "pgbouncer")

    def console(self, *, admin: bool = True) -> psycopg.Connection[Any]:
        url = self.console_url(admin=admin)
        return psycopg.connect(
            **connect_kwargs(url),
            autocommit=True,
            connect_timeout=5,
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW what`` on the console, as dicts by column name."""
        with self.console() as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def servers_of(self, user: str) -> list[dict[str, Any]]:
        """PgBouncer's server connections logged in as *user*."""
        return [row for row in self.show("SERVERS") if row["user"] == user]

    def clients_of(self, user: str) -> list[dict[str, Any]]:
        return [row for row in self.show("CLIENTS") if row["user"] == user]

    def log(self) -> str:
        if self.root is None or not (self.root / "pgbouncer.log").exists():
            return ""
        return (self.root / "pgbouncer.log").read_text(errors="replace")

    def set_users(self, *lines: str) -> None:
        """Put *lines* (``"name" "secret"``) in the auth_file besides the console users and
        ``RELOAD``: what an operator does in auth_file mode."""
        assert self.root is not None
        self.users = list(lines)
        self._write(self.root / "userlist.txt", self._userlist())
        with self.console() as conn:
            conn.execute("RELOAD")

    def reload(self, **settings: str) -> None:
        """Change settings in the ini file and ``RELOAD``."""
        assert self.root is not None
        self.settings.update(settings)
        self._write(self.root / "pgbouncer.ini", self._ini())
        with self.console() as conn:
            conn.execute("RELOAD")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PrivatePgbouncer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- clients through PgBouncer ---------------------------------------------------


def pooled(pgb: PrivatePgbouncer, app: Any, password: str | None = None) -> DbUrl:
    """*app*'s URL (or with *password*) through *pgb*."""
    return pgb.url(app.user, password or app.password, app.database)


def client(url: DbUrl | str) -> psycopg.Connection[Any]:
    """A client connection as an application opens one through PgBouncer: never
    prepared (transaction pooling hands each transaction another server connection)."""
    parsed = DbUrl.parse(url) if isinstance(url, str) else url
    return psycopg.connect(
        **connect_kwargs(parsed), autocommit=True, connect_timeout=5, prepare_threshold=None
    )


class Followers(ClientThreads):
    """Client threads that follow the pointer through PgBouncer (a resolver with TTL *ttl*).

    *kept* threads keep one connection, made anew when the active color changes (a
    long-running server); *short* threads open one per request (a Lambda, a job).
    Each request inserts a row and reads ``session_user``; every failure is kept.
    """

    join_timeout = 30.0

    def __init__(
        self, store: Store, layout: Layout, ttl: float, *, kept: int = 3, short: int = 2
    ) -> None:
        self.resolver = Resolver(store=store, prefix=layout.prefix, ttl=ttl)
        self.env = layout.env
        self.kept = kept
        super().__init__(kept + short)

    def work(self, worker: int) -> None:
        keep = worker < self.kept
        conn: psycopg.Connection[Any] | None = None
        color = None
        while self.running(0.01):
            try:
                ends = self.resolver.resolve(self.env)
                if conn is None or color is not ends.color or not keep:
                    if conn is not None:
                        conn.close()
                    conn, color = client(ends.writer_url), ends.color
                conn.execute("INSERT INTO orders (worker, color) VALUES (%s, %s)", (worker, color))
                row = conn.execute("SELECT session_user").fetchone()
                self.served(row[0] if row else "")
            except Exception as exc:
                self.failure(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
