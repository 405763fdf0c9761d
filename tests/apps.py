"""The application databases the end-to-end tests rotate, one interface on both engines.

:class:`App` is a PostgreSQL database whose single user owns everything in it,
:class:`MyApp` the same on MariaDB; :func:`engine_app` makes one on the engine a
test is parametrised with (:data:`ENGINES`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from clusters import ADMIN, MY_HOST, PG_VERSIONS, Cluster, Mariadb
from helpers import privileges
from psycopg import sql
from servers import MY_ADMIN

from credflip.engines.mysql import MysqlEngine, native_password_hash
from credflip.engines.mysql.driver import connect as my_connect
from credflip.rotation import new_password
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs
from credflip.urls import pymysql_kwargs as my_connect_kwargs

_counter = itertools.count(1)


def serial() -> int:
    """A number no other app or env of this test process has."""
    return next(_counter)


@dataclass
class App:
    """One PostgreSQL application database whose single user owns everything in it.

    The methods below the line are the interface the engine-independent
    end-to-end tests use; :class:`MyApp` offers the same for MariaDB.
    """

    cluster: Cluster
    user: str
    password: str = field(repr=False)  # failure output shows reprs
    database: str

    engine = "postgresql"
    #: PostgreSQL's refusal of a NOLOGIN role (a wrong password says something else).
    locked_marker = "is not permitted to log in"
    wrong_password_marker = "password authentication failed"

    @property
    def url(self) -> DbUrl:
        return self.cluster.pg.url(self.user, self.password, self.database)

    @property
    def admin_url(self) -> DbUrl:
        return self.cluster.admin_url(self.database)

    @property
    def green(self) -> str:
        return f"{self.user}_green"

    @property
    def group(self) -> str:
        return f"{self.user}_owner"

    def su(self) -> psycopg.Connection[Any]:
        return self.cluster.su(self.database)

    def connect(self, url: DbUrl | str) -> psycopg.Connection[Any]:
        parsed = DbUrl.parse(url) if isinstance(url, str) else url
        return psycopg.connect(**connect_kwargs(parsed), autocommit=True, connect_timeout=5)

    # -- engine-independent interface ------------------------------------

    def open(self, url: DbUrl | str) -> Any:
        """A client session that stays open (a straggler)."""
        return self.connect(url)

    def execute(self, url: DbUrl | str, *statements: str) -> list[Any]:
        """Run statements as the URL's user; return the last one's rows."""
        with self.connect(url) as conn:
            rows: list[Any] = []
            for statement in statements:
                cur = conn.execute(statement)
                rows = cur.fetchall() if cur.description else []
            return rows

    def admin_sql(self, *statements: str) -> None:
        """Run statements as the superuser, in the app's database."""
        with self.su() as conn:
            for statement in statements:
                conn.execute(statement)

    def user_exists(self, name: str) -> bool:
        with self.su() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
                is not None
            )

    def rights(self, user: str) -> Any:
        with self.su() as conn:
            return privileges(conn, user)

    def server_log(self) -> str:
        return self.cluster.pg.read_log()


def make_app(cluster: Cluster, *, rich: bool = True, counters: bool = True) -> App:
    """An app database; with *counters* the master user created pg_stat_statements in it."""
    n = serial()
    app = App(cluster, f"app{n}", new_password(), f"shop{n}")
    cluster.create_role(app.user, app.password)
    if cluster.version >= 16:
        # As on RDS/Aurora >= 16: the admin holds ADMIN OPTION on the
        # application user and nothing more (no INHERIT, no SET).
        with cluster.su() as conn:
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE").format(
                    sql.Identifier(app.user), sql.Identifier(ADMIN)
                )
            )
    with cluster.su() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(app.database), sql.Identifier(app.user)
            )
        )
    if counters:
        with cluster.su(app.database) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
    with app.connect(app.url) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, worker int, color text, "
            "at timestamptz DEFAULT now())"
        )
        if rich:
            conn.execute("CREATE SCHEMA billing")
            conn.execute("CREATE TABLE billing.invoices (id serial PRIMARY KEY, total numeric)")
            conn.execute("CREATE SEQUENCE billing.numbers")
            conn.execute(
                "CREATE VIEW billing.big AS SELECT * FROM billing.invoices WHERE total > 100"
            )
            conn.execute(
                "CREATE FUNCTION billing.add(a int, b int) RETURNS int LANGUAGE sql "
                "AS 'SELECT a + b'"
            )
            conn.execute("CREATE VIEW order_count AS SELECT count(*) AS n FROM orders")
            conn.execute("INSERT INTO billing.invoices (total) VALUES (50), (150)")
    return app


def my_hash(password: str) -> str:
    return native_password_hash(password)


@dataclass
class MyApp:
    """One MariaDB application database and its single user."""

    mariadb: Mariadb
    user: str
    password: str = field(repr=False)  # failure output shows reprs
    database: str

    engine = "mysql"
    #: MariaDB's error 4151 (ER_ACCOUNT_HAS_BEEN_LOCKED), as PyMySQL shows it.
    locked_marker = "(4151, 'Access denied, this account is locked')"
    wrong_password_marker = "Access denied for user"

    @property
    def url(self) -> DbUrl:
        return DbUrl("mysql", MY_HOST, self.user, self.password, self.mariadb.port, self.database)

    @property
    def admin_url(self) -> DbUrl:
        return self.mariadb.admin_url(self.database)

    @property
    def green(self) -> str:
        return f"{self.user}_green"

    def open(self, url: DbUrl | str) -> Any:
        parsed = DbUrl.parse(url) if isinstance(url, str) else url
        return my_connect(**my_connect_kwargs(parsed), autocommit=True, connect_timeout=5)

    def execute(self, url: DbUrl | str, *statements: str) -> list[Any]:
        with self.open(url) as conn, conn.cursor() as cur:
            rows: list[Any] = []
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall()) if cur.description else []
            return rows

    def admin_sql(self, *statements: str) -> None:
        self.mariadb.sql(f"USE `{self.database}`", *statements)

    def user_exists(self, name: str) -> bool:
        return bool(self.mariadb.sql("SELECT 1 FROM mysql.user WHERE User = %s", args=(name,)))

    def rights(self, user: str) -> Any:
        with MysqlEngine(self.admin_url) as eng:
            assert isinstance(eng, MysqlEngine)
            return eng.normalized_grants(user)

    def server_log(self) -> str:
        return self.mariadb.general_log.read_text(errors="replace")


def make_my_app(mariadb: Mariadb, *, rich: bool = True, hosts: tuple[str, ...] = ("%",)) -> MyApp:
    n = serial()
    app = MyApp(mariadb, f"cft_app{n}", new_password(), f"cft_shop{n}")
    mariadb.sql(f"CREATE DATABASE `{app.database}`")
    for host in hosts:
        mariadb.sql(
            "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s",
            args=(app.user, host, my_hash(app.password)),
        )
        mariadb.sql(f"GRANT ALL PRIVILEGES ON `{app.database}`.* TO '{app.user}'@'{host}'")
    mariadb.sql(f"GRANT ALL PRIVILEGES ON `{app.database}`.* TO '{MY_ADMIN}'@'%' WITH GRANT OPTION")
    statements = [
        "CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, worker int, "
        "color varchar(16), at timestamp DEFAULT CURRENT_TIMESTAMP)"
    ]
    if rich:
        statements += [
            "CREATE TABLE invoices (id int AUTO_INCREMENT PRIMARY KEY, total decimal(10,2))",
            "INSERT INTO invoices (total) VALUES (50), (150)",
            "CREATE VIEW big AS SELECT * FROM invoices WHERE total > 100",
            "CREATE PROCEDURE add_numbers(IN a int, IN b int) SELECT a + b",
        ]
    app.execute(app.url, *statements)
    return app


#: An app on either engine.
AnyApp = App | MyApp

ENGINES = [*(f"postgresql{v}" for v in PG_VERSIONS), "mysql"]


def engine_app(request: pytest.FixtureRequest, name: str, **options: bool) -> App | MyApp:
    """A new app on the engine *name* (``postgresql15``, ``postgresql18`` or ``mysql``)."""
    if name.startswith("postgresql"):
        cl = request.getfixturevalue("clusters").get(int(name.removeprefix("postgresql")))
        return make_app(cl, **options)
    return make_my_app(request.getfixturevalue("mariadb"), **options)
