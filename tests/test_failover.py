"""A failover is waited out: the writer turning read-only, or away, as a rotation runs.

During an Aurora failover the writer endpoint reaches the old writer, now
read-only, for a while: its writes fail with PostgreSQL's SQLSTATE 25006 or
MySQL's error 1290. Here a private server is made read-only
(``ALTER SYSTEM SET default_transaction_read_only`` / ``SET GLOBAL read_only``;
the tests' admin has neither SUPER nor READ ONLY ADMIN) in the middle of a
rotation and back again once the rotation shows it waits: the phase is tried
again and the rotation finishes. Read-only past ``--reconnect-timeout`` stops
it with one line, resumable. The first connections (finding the fleet, the
checks before any change) are waited for too, within the Lambda's deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pymysql
import pytest
from apps import App, MyApp, make_app, make_my_app, serial
from clusters import Cluster, Mariadb, start_cluster
from faults import Clients, Invariant, wait_for
from helpers import assert_pointer_connects, login_error
from servers import PrivateMariadb

from credflip import commands
from credflip.aws_lambda import handler
from credflip.engines import engine_for
from credflip.errors import DatabaseUnavailable, EngineError, RotationError
from credflip.layout import Color, Layout
from credflip.rotation import Event, Notice, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase, load_state, read_lock
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

TTL = 0.3
RETRIED = "trying the phase again"


@dataclass
class Server:
    """A private server of either engine that a test may make read-only, or stop."""

    engine: str
    new_app: Callable[[], App | MyApp]
    read_only: Callable[[bool], None]
    halt: Callable[[], None]
    resume: Callable[[], Any]


def _pg_read_only(cl: Cluster, on: bool) -> None:
    """Turn ``default_transaction_read_only`` on or off for every session, open ones too.

    The reload is asynchronous: once a new session shows the value, the
    postmaster has re-read its files and signalled every backend, which
    re-reads them before it runs its next statement.
    """
    value = "on" if on else "off"
    with cl.su() as conn:
        conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
        conn.execute("SELECT pg_reload_conf()")

    def shown() -> bool:
        with cl.su() as conn:
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
        return row is not None and row[0] == value

    wait_for(shown, timeout=10, what=f"default_transaction_read_only = {value}")


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    cl = start_cluster(15)
    try:
        yield Server(
            "postgresql",
            lambda: make_app(cl),
            lambda on: _pg_read_only(cl, on),
            cl.pg.halt,
            cl.pg.resume,
        )
    finally:
        cl.pg.stop()


@pytest.fixture(scope="module")
def my_server() -> Iterator[Server]:
    server = PrivateMariadb("--userstat=ON").start()
    try:
        db = Mariadb(server.add_admin(), Path("/nonexistent"), server.port)

        def read_only(on: bool) -> None:
            server.sql(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")

        yield Server("mysql", lambda: make_my_app(db), read_only, server.halt, server.resume)
    finally:
        server.stop()


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    name = "pg_server" if request.param == "postgresql" else "my_server"
    srv: Server = request.getfixturevalue(name)
    yield srv
    srv.read_only(False)  # whatever the test did


def initialised(app: App | MyApp, store: Store, name: str) -> Layout:
    layout = Layout(name)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    return layout


# -- the translation at the engine boundary -------------------------------------


def my_error(errno: int, message: str) -> pymysql.err.OperationalError:
    """As PyMySQL raises it: with the server's SQLSTATE (HY000 for these)."""
    return pymysql.err.OperationalError(errno, message, sqlstate="HY000")


def test_read_only_errors_are_database_unavailable() -> None:
    """The drivers' read-only errors become DatabaseUnavailable (retried), other errors
    with the same code stay what they were."""
    pg = engine_for(DbUrl.parse("postgresql://admin:pw@db:5432/app"))
    my = engine_for(DbUrl.parse("mysql://admin:pw@db:3306/app"))
    cases: list[tuple[Any, BaseException, bool]] = [
        (pg, psycopg.errors.ReadOnlySqlTransaction("cannot execute CREATE ROLE in a r-o tx"), True),
        (pg, psycopg.errors.ObjectNotInPrerequisiteState("recovery is in progress"), True),
        (pg, psycopg.errors.ObjectNotInPrerequisiteState("cannot drop a busy thing"), False),
        (pg, psycopg.errors.DuplicateObject("role exists"), False),
        (my, my_error(1290, "... with the --read-only option so ..."), True),
        (my, my_error(1290, "... --super-read-only option ..."), True),
        (my, my_error(1290, "... --secure-file-priv option ..."), False),
        (my, my_error(1836, "Running in read-only mode"), True),
        (my, my_error(1396, "Operation CREATE USER failed"), False),
    ]
    open_conn = SimpleNamespace(closed=False)  # a connection that did not break
    for eng, exc, read_only in cases:
        lost = eng._lost(exc, open_conn, late=False, where="db:1")
        if read_only:
            assert isinstance(lost, DatabaseUnavailable), exc
            assert "read-only" in str(lost) and "failover" in str(lost)
        else:
            assert lost is None, exc


# -- read-only inside a phase -----------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.PREPARE, Phase.RETIRE])
def test_a_writer_turning_read_only_inside_a_phase_is_waited_out(
    server: Server, phase: Phase, tmp_path: Path
) -> None:
    """The writer turns read-only as *phase* starts (a failover); another thread turns it
    back once the rotation says it waits for it: the phase runs again and the
    rotation finishes, the invariant held and no client refused."""
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "read-only")
    notices: list[str] = []
    turned: list[Phase] = []
    waiting = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is phase and not turned:
            server.read_only(True)
            turned.append(phase)
        if isinstance(event, Notice):
            notices.append(event.message)
            if RETRIED in event.message and "read-only" in event.message:
                waiting.set()

    def failover_ends() -> None:
        if waiting.wait(60):
            server.read_only(False)

    ender = threading.Thread(target=failover_ends)
    ender.start()
    try:
        with Invariant(store, layout) as invariant, Clients(store, layout) as clients:
            clients.serve_more()
            result = rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=30),
                on_event=on_event,
            )
            clients.serve_more(what="clients serving after the failover")
    finally:
        waiting.set()
        ender.join(30)
    assert result.finished, notices
    assert turned == [phase]
    retries = [n for n in notices if RETRIED in n]
    assert retries and all(n.startswith(f"{phase}: ") for n in retries), notices
    assert "refuses writes, it is read-only" in retries[0]
    assert app.admin_url.password not in " ".join(notices)
    invariant.assert_held()
    clients.assert_fine()
    assert app.locked_marker in login_error(app.url)
    assert read_lock(store, layout) is None


# -- the command line: waited out (exit 0), or past --reconnect-timeout (exit 1) -----


class Run:
    """``credflip ARGS`` in its own process; *on_line* sees each line of its stderr."""

    def __init__(self, args: list[str], env: dict[str, str], on_line: Callable[[str], None]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "credflip", *args],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(on_line,))
        self._reader.start()

    def _read(self, on_line: Callable[[str], None]) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            on_line(line)

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(10)
        return code


def rotate_args(store: Store, layout: Layout, *extra: str) -> list[str]:
    return [
        "rotate",
        "--env",
        layout.env,
        "--store",
        store.url,
        "--yes",
        "--client-ttl",
        "300ms",
        "--quiet",
        "300ms",
        *extra,
    ]


def test_the_cli_stops_after_the_reconnect_timeout_then_waits_out_a_read_only_writer(
    server: Server, tmp_path: Path
) -> None:
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "read-only-cli")
    env = {"CREDFLIP_ADMIN_URL": app.admin_url.secret}
    server.read_only(True)
    # Read-only for longer than --reconnect-timeout: one line, resumable, nothing broken.
    stopped = Run(rotate_args(store, layout, "--reconnect-timeout", "2s"), env, lambda _l: None)
    assert stopped.wait() == 1, stopped.lines
    errors = [line for line in stopped.lines if line.startswith("credflip: error: ")]
    assert len(errors) == 1 and errors[0] == stopped.lines[-1], stopped.lines
    assert errors[0].startswith("credflip: error: stopped in prepare: the server at ")
    assert "refuses writes, it is read-only" in errors[0]
    assert f"the pointer names blue; run 'credflip rotate --env {layout.env}' again" in errors[0]
    assert sum(RETRIED in line for line in stopped.lines) >= 2
    assert app.admin_url.password not in "\n".join(stopped.lines)
    state = load_state(store, layout)
    assert state.current is not None and state.current.phase is Phase.PREPARE
    assert read_lock(store, layout) is None
    assert assert_pointer_connects(store, layout) is Color.BLUE

    # Again, and the failover ends once the command says it waits: exit 0.
    def failover_ends(line: str) -> None:
        if RETRIED in line and "read-only" in line:
            server.read_only(False)

    done = Run(rotate_args(store, layout), env, failover_ends)
    assert done.wait() == 0, done.lines
    assert any(RETRIED in line for line in done.lines), done.lines
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert app.locked_marker in login_error(app.url)


# -- the first connections ----------------------------------------------------------


def test_a_rotation_started_while_the_writer_is_away_waits_for_it(
    server: Server, tmp_path: Path
) -> None:
    """The server is down when ``rotate`` starts: finding the fleet and the checks
    before any change are retried like a phase; the server comes back once the
    command says it waits, and the rotation finishes (exit 0)."""
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "first-connection")
    env = {"CREDFLIP_ADMIN_URL": app.admin_url.secret}
    server.halt()
    back: list[str] = []

    def restarted(line: str) -> None:
        if "before the rotation (re)starts" in line and not back:
            back.append(line)
            server.resume()

    try:
        run = Run(rotate_args(store, layout), env, restarted)
        code = run.wait()
    finally:
        if not back:
            server.resume()
    assert code == 0, run.lines
    assert back and "cannot connect" in back[0], run.lines
    assert load_state(store, layout).current is None
    assert assert_pointer_connects(store, layout) is Color.GREEN


class LambdaContext:
    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


def test_the_lambda_tries_the_first_connection_until_its_deadline(
    pg_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invocation that finds the database away keeps trying until its own deadline
    (before --reconnect-timeout runs out), not past it, then fails with one line;
    the next one, once the server is back, finishes."""
    app = pg_server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "lambda-away")
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    event = {"env": layout.env, "store": store.url, "client_ttl": "300ms", "quiet": "300ms"}
    pg_server.halt()
    try:
        started = time.monotonic()
        with pytest.raises(RotationError) as caught:
            handler({**event, "margin": "6s"}, LambdaContext(10))
        elapsed = time.monotonic() - started
    finally:
        pg_server.resume()
    message = str(caught.value)
    assert message.startswith("could not start: cannot connect the admin URL"), message
    assert "nothing was changed" in message and "\n" not in message
    # It tries until its deadline (4 s: the invocation's 10 s less the margin), and
    # answers before the invocation ends: the promise, with the margin as slack.
    assert 3.5 < elapsed < 10, elapsed
    assert read_lock(store, layout) is None
    assert load_state(store, layout).current is None  # nothing changed
    done = handler(event, LambdaContext(60))
    assert done["status"] == "done", done
    assert app.locked_marker in login_error(app.url)


def test_a_read_only_admin_connection_is_reopened(pg_server: Server) -> None:
    """After a read-only refusal the next statement opens a new admin connection (in a
    failover the endpoint may lead elsewhere by then)."""
    app = pg_server.new_app()
    eng = engine_for(app.admin_url)
    try:
        first = eng.conn
        create = f"CREATE ROLE credflip_ro_probe{serial()}"  # a new one each run (--count)
        pg_server.read_only(True)
        with pytest.raises(DatabaseUnavailable, match="read-only"):
            eng._run(create)
        pg_server.read_only(False)
        assert eng.conn is not first
        eng._run(create)
        with pytest.raises(EngineError, match="already exists"):
            eng._run(create)  # exists: an error of its own
    finally:
        eng.close()
