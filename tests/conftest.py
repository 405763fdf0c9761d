"""Fixtures: a private PostgreSQL that enforces passwords, app databases, stores.

The cluster is started once per session (scram-sha-256 on every connection,
``log_statement=all``) and checked to reject a wrong password before any test
relies on it. The admin the tests use is *not* a superuser: CREATEROLE,
CREATEDB, pg_read_all_stats and pg_signal_backend, as on RDS/Aurora.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql

from credflip.cli import main
from credflip.embedded import EmbeddedPostgres
from credflip.engines.mysql import connect_kwargs as my_connect_kwargs
from credflip.engines.postgres import connect_kwargs
from credflip.layout import Layout
from credflip.rotation import new_password
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore
from credflip.urls import DbUrl

ADMIN = "credflip_admin"
_counter = itertools.count(1)


@dataclass
class Cluster:
    """The session's private cluster and its admin."""

    pg: EmbeddedPostgres
    admin_password: str

    def su(self, database: str = "postgres") -> psycopg.Connection[Any]:
        url = self.pg.url("postgres", self.pg.superuser_password, database)
        return psycopg.connect(**connect_kwargs(url), autocommit=True)

    def admin_url(self, database: str) -> DbUrl:
        return self.pg.url(ADMIN, self.admin_password, database)

    def create_role(self, name: str, password: str | None, extra: str = "") -> None:
        # A verifier, not plaintext: the server log is scanned for passwords.
        self.pg.create_role(name, password, extra)


def start_cluster(**settings: str) -> Cluster:
    """A private cluster with the tests' non-superuser admin; the caller stops ``.pg``.

    pg_stat_statements is preloaded, as on RDS/Aurora: the drain's login counter.
    """
    pg = EmbeddedPostgres(
        log_statement="all",
        settings={"shared_preload_libraries": "pg_stat_statements", **settings},
    ).start()
    try:
        cl = Cluster(pg, new_password())
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
        # The whole suite rests on the server refusing a wrong password.
        wrong = pg.url(ADMIN, "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**connect_kwargs(wrong)).close()
        psycopg.connect(**connect_kwargs(cl.admin_url("postgres"))).close()
        return cl
    except BaseException:
        pg.stop()
        raise


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    cl = start_cluster()
    try:
        yield cl
    finally:
        cl.pg.stop()


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

MY_ADMIN = "cft_admin"
MY_HOST = "127.0.0.1"


def my_root(port: int = 3306) -> Any:
    return pymysql.connect(host=MY_HOST, port=port, user="root", autocommit=True)


def my_hash(password: str) -> str:
    from credflip.engines.mysql import native_password_hash

    return native_password_hash(password)


@dataclass
class Mariadb:
    """The machine's MariaDB, with a non-root admin and the general log on."""

    admin_password: str
    general_log: Path
    port: int = 3306

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


def _drop_test_objects(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT User FROM mysql.user WHERE User LIKE 'cft%%' AND is_role = 'Y'")
        for (role,) in cur.fetchall():
            cur.execute("DROP ROLE %s", (role,))
        cur.execute("SELECT User, Host FROM mysql.user WHERE User LIKE 'cft%%' AND is_role = 'N'")
        for user, host in cur.fetchall():
            cur.execute("DROP USER %s@%s", (user, host))
        cur.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'cft%%'"
        )
        for (name,) in cur.fetchall():
            cur.execute(f"DROP DATABASE `{name}`")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mariadb]:
    try:
        root = my_root()
    except pymysql.err.MySQLError as exc:
        pytest.fail(f"MariaDB is not answering on {MY_HOST}:3306 ({exc}); start it first")
    password = new_password()
    log_dir = Path(tempfile.mkdtemp(prefix="credflip-general-"))
    shutil.chown(log_dir, user="mysql")  # the server writes the log as its own OS user
    log = log_dir / "general.log"
    with root, root.cursor() as cur:
        _drop_test_objects(root)
        # userstat keeps per-user login counts: the drain's counter on MariaDB.
        cur.execute("SELECT @@userstat")
        userstat_before = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("SET GLOBAL userstat = 1")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s", (MY_ADMIN, my_hash(password)))
        cur.execute(f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{MY_ADMIN}'@'%'")
        cur.execute(f"GRANT SELECT ON mysql.* TO '{MY_ADMIN}'@'%'")
        cur.execute("SET GLOBAL general_log_file = %s", (str(log),))
        cur.execute("SET GLOBAL general_log = ON")
    wrong = DbUrl("mysql", MY_HOST, MY_ADMIN, "not-the-password", 3306, "")
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(
            **__import__("credflip.engines.mysql", fromlist=["x"]).connect_kwargs(wrong)
        )
    try:
        yield Mariadb(password, log)
    finally:
        with my_root() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL general_log = OFF")
            cur.execute("SET GLOBAL userstat = %s", (userstat_before,))
            _drop_test_objects(conn)
        shutil.rmtree(log_dir, ignore_errors=True)


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


@pytest.fixture(params=["postgresql", "mysql"])
def any_app(request: pytest.FixtureRequest) -> App | MyApp:
    """An application database on each engine: the end-to-end suite runs on both."""
    if request.param == "postgresql":
        return make_app(request.getfixturevalue("cluster"))
    return make_my_app(request.getfixturevalue("mariadb"))


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
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in-process; returns exit code and captured output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

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
