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
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from credflip.cli import main
from credflip.embedded import EmbeddedPostgres
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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    pg = EmbeddedPostgres(log_statement="all").start()
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
        yield cl
    finally:
        pg.stop()


@dataclass
class App:
    """One application database whose single user owns everything in it."""

    cluster: Cluster
    user: str
    password: str
    database: str

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


def make_app(cluster: Cluster, *, rich: bool = True) -> App:
    n = next(_counter)
    app = App(cluster, f"app{n}", new_password(), f"shop{n}")
    cluster.create_role(app.user, app.password)
    with cluster.su() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(app.database), sql.Identifier(app.user)
            )
        )
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
