"""Private database servers for the benchmarks, with the admin credflip works through and
app databases made on demand.

:class:`Postgres` runs an embedded PostgreSQL; :class:`Mariadb` the tests' private
MariaDB (tests/servers.py). Both make a new app (a database and its user) per call.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from credflip.demo.cluster import EmbeddedPostgres
from credflip.engines.mysql import native_password_hash
from credflip.rotation import new_password
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

# The private MariaDB of the tests (tests/servers.py).
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from servers import PrivateMariadb

_n = itertools.count(1)


class Postgres:
    """A private PostgreSQL with pg_stat_statements preloaded (and *settings*) and the
    admin credflip works through: CREATEROLE, CREATEDB, pg_read_all_stats and
    pg_signal_backend, no superuser, as on RDS/Aurora."""

    name = "postgresql"
    counter = "pg_stat_statements"

    def __init__(self, **settings: str) -> None:
        self.pg = EmbeddedPostgres(
            log_statement="none",
            settings={"shared_preload_libraries": "pg_stat_statements", **settings},
        ).start()
        try:
            self.admin_password = new_password()
            self.pg.create_role("credflip_admin", self.admin_password, "CREATEROLE CREATEDB")
            with self.su() as conn:
                conn.execute("GRANT pg_read_all_stats, pg_signal_backend TO credflip_admin")
        except BaseException:
            self.pg.stop()
            raise

    def su(self, database: str = "postgres") -> psycopg.Connection[Any]:
        url = self.pg.url("postgres", self.pg.superuser_password, database)
        return psycopg.connect(**connect_kwargs(url), autocommit=True)

    def app(self, counters: bool = True, *, name: str = "") -> tuple[DbUrl, DbUrl]:
        """A new app database owned by its user *name* (default: a new one): ``(admin URL,
        app URL)``; with *counters*, pg_stat_statements is created in it."""
        name = name or f"bench{next(_n)}"
        password = new_password()
        self.pg.create_role(name, password)
        with self.su() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(name)
                )
            )
        if counters:
            with self.su(name) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
        return self.pg.url("credflip_admin", self.admin_password, name), self.pg.url(
            name, password, name
        )

    def close(self) -> None:
        self.pg.stop()


class Mariadb:
    """A private MariaDB with ``userstat`` on; every user and database it makes starts
    with *prefix*."""

    name = "mysql"
    counter = "user_statistics"

    def __init__(self, prefix: str = "cfb") -> None:
        self.prefix = prefix
        self.admin = f"{prefix}_admin"
        self.server = PrivateMariadb("--userstat=ON", "--max-connections=500").start()
        try:
            self.admin_password = new_password()
            self.sql(
                "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
                args=(self.admin, native_password_hash(self.admin_password)),
            )
            self.sql(f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{self.admin}'@'%'")
            self.sql(f"GRANT SELECT ON mysql.* TO '{self.admin}'@'%'")
        except BaseException:
            self.server.stop()
            raise

    def sql(self, statement: str, args: Any = None) -> list[Any]:
        return self.server.sql(statement, args=args)

    def url(self, user: str, password: str, database: str) -> DbUrl:
        return DbUrl("mysql", "127.0.0.1", user, password, self.server.port, database)

    def app(self, counters: bool = True) -> tuple[DbUrl, DbUrl]:
        """A new app database and user: ``(admin URL, app URL)`` (userstat is always on)."""
        name = f"{self.prefix}_app{next(_n)}"
        password = new_password()
        self.sql(f"CREATE DATABASE `{name}`")
        self.sql(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
            args=(name, native_password_hash(password)),
        )
        self.sql(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{name}'@'%'")
        self.sql(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{self.admin}'@'%' WITH GRANT OPTION")
        return self.url(self.admin, self.admin_password, name), self.url(name, password, name)

    def close(self) -> None:
        self.server.stop()
