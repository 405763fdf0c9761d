"""Fixtures: the session's servers, app databases on each engine, stores, the CLI.

The servers are :mod:`servers`' (one PostgreSQL cluster per version, one
MariaDB per test process), the apps :mod:`apps`'.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
import shared_servers
from apps import ENGINES, App, MyApp, engine_app, make_app, make_my_app, serial
from clusters import MY_HOST, PG_VERSIONS, Cluster, Clusters, Mariadb, pg_id, start_cluster
from moto_iam import moto_with_iam_server
from poolers import PrivatePgbouncer
from proxies import REGION, Aws, make_aws
from servers import MY_ADMIN, PrivateMariadb

from credflip import commands
from credflip.cli import main
from credflip.layout import Layout
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore
from credflip.urls import DbUrl
from credflip.urls import pymysql_kwargs as my_connect_kwargs


@pytest.fixture(scope="session")
def clusters() -> Iterator[Clusters]:
    registry = Clusters()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session", params=PG_VERSIONS, ids=pg_id)
def cluster(request: pytest.FixtureRequest, clusters: Clusters) -> Cluster:
    """The session's cluster of each PostgreSQL version: every test using it runs on both."""
    return clusters.get(request.param)


@pytest.fixture(scope="module", params=PG_VERSIONS, ids=pg_id)
def own_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster of the requesting module's own, for tests that change server-wide settings."""
    cl = start_cluster(request.param)
    try:
        yield cl
    finally:
        cl.pg.stop()


@pytest.fixture
def app(cluster: Cluster) -> App:
    return make_app(cluster)


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

# The machine's own MariaDB and PostgreSQL are no test's: refused in every test process.
shared_servers.install()


@pytest.fixture(autouse=True)
def _no_shared_server() -> Iterator[None]:
    """Fail a test that tried to reach a server of the machine (it was refused)."""
    before = len(shared_servers.REACHED)
    yield
    reached = shared_servers.REACHED[before:]
    assert not reached, f"the test tried to reach the machine's own servers: {reached}"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server mode on a random loopback port: real boto3, real HTTP."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def moto_with_iam() -> Iterator[str]:
    """A moto server of the module's own that enforces IAM policies (:mod:`moto_iam`)."""
    with moto_with_iam_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """moto's RDS, Secrets Manager and KMS (:mod:`proxies`), where boto3 clients go."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_RDS", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    return make_aws(moto_endpoint)


@pytest.fixture
def pgbouncer(cluster: Cluster, app: App) -> Iterator[PrivatePgbouncer]:
    """A private PgBouncer in transaction pooling in front of *app*'s database."""
    with PrivatePgbouncer(cluster, "transaction") as pgb:
        pgb.serve(app.database)
        yield pgb


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
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The local SQLite store alone, for tests that need no second store."""
    store = SqliteStore(tmp_path / "params.db")
    yield store
    store.close()


@pytest.fixture
def lambda_event(
    app: App, moto_endpoint: str, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """*app*'s env initialised on moto's SSM, set up as the rotation Lambda finds it; the
    event that rotates it, with short waits."""
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    # The admin URL comes from the environment (or the store), never the event.
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    monkeypatch.setenv("CREDFLIP_STORE", store.url)
    yield {"env": layout.env, "client_ttl": "200ms", "quiet": "200ms", "margin": "500ms"}
    store.close()


@pytest.fixture
def layout() -> Layout:
    return Layout(f"env{serial()}")


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


@pytest.fixture(scope="module")
def mariadb_ps() -> Iterator[Mariadb]:
    """A private MariaDB with performance_schema on (the workers' own have it off),
    for the tests that read it (program names, statement counts)."""
    server = PrivateMariadb("--performance-schema=ON").start()
    try:
        password = server.add_admin(performance_schema=True)
        yield Mariadb(password, Path("/nonexistent/general.log"), port=server.port)
    finally:
        server.stop()
