"""The demo's throw-away databases: a private PostgreSQL, or a database on a MySQL server."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from ..errors import ConfigurationError
from ..rotation import new_password
from ..urls import DbUrl
from ..urls import libpq_kwargs as connect_kwargs
from .cluster import EmbeddedPostgres

__all__ = ["MysqlTarget", "PostgresTarget", "Target"]


class Target(contextlib.AbstractContextManager["Target"]):
    """A throw-away database for the demo: its admin and app URLs and a row count."""

    admin_url: DbUrl
    app_url: DbUrl
    description = ""

    def count_rows(self) -> int:
        """Rows in the orders table (read by an account that is not rotated)."""
        raise NotImplementedError

    def __exit__(self, *_exc: object) -> None:
        """Remove everything the target made."""


class PostgresTarget(Target):
    description = "a private PostgreSQL (scram-sha-256)"

    def __enter__(self) -> PostgresTarget:
        # pg_stat_statements, preloaded as on RDS/Aurora, lets the drain count
        # logins; binaries without it still run the demo, sessions only.
        counted = {"shared_preload_libraries": "pg_stat_statements"}
        try:
            self.pg = pg = EmbeddedPostgres(log_statement="none", settings=counted).start()
        except ConfigurationError:
            counted = {}
            self.pg = pg = EmbeddedPostgres(log_statement="none").start()
        admin_pw, app_pw = new_password(), new_password()
        pg.create_role("credflip_admin", admin_pw, "CREATEROLE CREATEDB")
        pg.create_role("app", app_pw)
        with psycopg.connect(**connect_kwargs(pg.superuser_url), autocommit=True) as su:
            su.execute("GRANT pg_read_all_stats, pg_signal_backend TO credflip_admin")
            su.execute("CREATE DATABASE shop OWNER app")
            if su.info.server_version >= 160000:
                # 16+: CREATEROLE covers only roles the admin holds ADMIN OPTION on.
                su.execute("GRANT app TO credflip_admin WITH ADMIN TRUE, INHERIT FALSE, SET FALSE")
        if counted:
            url = pg.url("postgres", pg.superuser_password, "shop")
            with psycopg.connect(**connect_kwargs(url), autocommit=True) as su:
                su.execute("CREATE EXTENSION pg_stat_statements")
        self.app_url = pg.url("app", app_pw, "shop")
        with psycopg.connect(**connect_kwargs(self.app_url), autocommit=True) as app:
            app.execute(
                "CREATE TABLE orders (id bigserial PRIMARY KEY, worker int NOT NULL, "
                "color text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
            )
        self.admin_url = pg.url("credflip_admin", admin_pw, "shop")
        return self

    def count_rows(self) -> int:
        url = self.pg.url("postgres", self.pg.superuser_password, "shop")
        with psycopg.connect(**connect_kwargs(url)) as conn:
            row = conn.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0

    def __exit__(self, *_exc: object) -> None:
        self.pg.stop()


class MysqlTarget(Target):
    """A database and two users on a reachable MySQL/MariaDB, dropped afterwards."""

    def __init__(self, root_url: str) -> None:
        self.root = DbUrl.parse(root_url, what="CREDFLIP_DEMO_MYSQL_URL")
        self.description = f"the MySQL/MariaDB server at {self.root.host}:{self.root.port or 3306}"
        self.suffix = new_password()[:6].lower().replace("-", "x").replace("_", "x")

    def _root(self) -> Any:
        import pymysql

        from ..engines.mysql.driver import connect as my_connect
        from ..urls import pymysql_kwargs as my_kwargs

        try:
            return my_connect(**my_kwargs(self.root), autocommit=True, connect_timeout=5)
        except pymysql.err.MySQLError as exc:
            raise ConfigurationError(
                f"the MySQL demo needs a server it may administer at {self.root} ({exc}); set "
                f"CREDFLIP_DEMO_MYSQL_URL to a root URL"
            ) from exc

    def __enter__(self) -> MysqlTarget:
        from ..engines.mysql import native_password_hash

        self.db, self.user, self.admin = (
            f"credflip_demo_{self.suffix}",
            f"demo_app_{self.suffix}",
            f"demo_admin_{self.suffix}",
        )
        admin_pw, app_pw = new_password(), new_password()
        port = self.root.port or 3306
        with self._root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.db}`")
            cur.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
                (self.admin, native_password_hash(admin_pw)),
            )
            cur.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
                (self.user, native_password_hash(app_pw)),
            )
            cur.execute(
                f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{self.admin}'@'%'"
            )
            cur.execute(f"GRANT SELECT ON mysql.* TO '{self.admin}'@'%'")
            # performance_schema.accounts counts logins where the server has it on.
            cur.execute(f"GRANT SELECT ON performance_schema.* TO '{self.admin}'@'%'")
            cur.execute(f"GRANT ALL ON `{self.db}`.* TO '{self.admin}'@'%' WITH GRANT OPTION")
            cur.execute(f"GRANT ALL ON `{self.db}`.* TO '{self.user}'@'%'")
            cur.execute(
                f"CREATE TABLE `{self.db}`.orders (id bigint AUTO_INCREMENT PRIMARY KEY, "
                "worker int NOT NULL, color varchar(16) NOT NULL, "
                "at timestamp DEFAULT CURRENT_TIMESTAMP)"
            )
        host = self.root.host
        self.admin_url = DbUrl("mysql", host, self.admin, admin_pw, port, self.db)
        self.app_url = DbUrl("mysql", host, self.user, app_pw, port, self.db)
        return self

    def count_rows(self) -> int:
        with self._root() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{self.db}`.orders")
            return int(cur.fetchone()[0])

    def __exit__(self, *_exc: object) -> None:
        with self._root() as conn, conn.cursor() as cur:
            for user in (self.admin, self.user, f"{self.user}_green"):
                cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
            cur.execute(f"DROP DATABASE IF EXISTS `{self.db}`")
