"""Retiring behind PgBouncer: the server ends PgBouncer's connections of the old user (none
that serves a client), a client that came after the last look sends the rotation back
to the drain, and PgBouncer's console waits no longer than the engines. Draining: a
server connection PgBouncer closed between two samples is no quiet, nor one that served a
request and closed between two runs, but not one the drain ended itself; a locked
color's refusal by PgBouncer is an authentication failure."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import psycopg
import pytest
from apps import App
from faults import Frozen
from helpers import connects, login_error, wait_until
from poolers import PrivatePgbouncer, client, pooled
from psycopg import sql

from credflip import commands
from credflip.aws_lambda import _bounded_engine
from credflip.drain import DrainPolicy, DrainStatus, DrainTracker, Verdict
from credflip.engines import PooledBackend, engine_for
from credflip.errors import DatabaseUnavailable, is_auth_failure
from credflip.layout import Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    env_fleet,
    env_pooler,
    rotate,
)
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl


class Registered(NamedTuple):
    """An env whose URL goes through PgBouncer, registered as its pooler."""

    app: App
    pgb: PrivatePgbouncer
    store: SqliteStore
    layout: Layout
    url: DbUrl


@pytest.fixture
def registered(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout
) -> Registered:
    url = pooled(pgbouncer, app)
    console = pgbouncer.console_url()
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=url, pooler_url=console)
    return Registered(app, pgbouncer, sqlite_store, layout, url)


def test_the_server_leaves_out_a_poolers_connection_only_by_pid_and_port(
    app: App, pgbouncer: PrivatePgbouncer
) -> None:
    from credflip.engines import engine_for

    with client(pooled(pgbouncer, app)) as conn:
        conn.execute("SELECT 1")
    [server] = pgbouncer.servers_of(app.user)
    pid, port = int(server["remote_pid"]), int(server["local_port"])
    mine = PooledBackend(pid, port)
    with engine_for(app.admin_url) as eng:
        assert eng.sessions(app.user).count == 1
        assert eng.sessions(app.user, pooled=[mine]).count == 0
        # Another port (a NAT between them) or another pid: not PgBouncer's.
        for other in (PooledBackend(pid, port + 1), PooledBackend(pid + 1, port)):
            assert eng.sessions(app.user, pooled=[other]).count == 1
        assert eng.terminate(app.user, only=[]) == 0
        assert eng.terminate(app.user, only=[other]) == 0
        # One that serves a client (in its transaction) is not ended.
        with client(pooled(pgbouncer, app)) as busy:
            busy.autocommit = False
            busy.execute("SELECT 1")
            assert [int(s["remote_pid"]) for s in pgbouncer.servers_of(app.user)] == [pid]
            assert eng.terminate(app.user, only=[mine]) == 0
            busy.rollback()
        assert eng.terminate(app.user, only=[mine]) == 1
        assert eng.sessions(app.user).count == 0


def test_retire_drop_behind_pgbouncer_ends_its_connections_first(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    common = ["--env", layout.env, "--store", sqlite_store.url]
    assert cli(
        "init", *common, "--admin-url", app.admin_url.secret,
        "--writer-url", pooled(pgbouncer, app).secret,
        "--pooler", pgbouncer.console_url().secret, "--group-role", app.group,
    ).code == 0  # fmt: skip
    with client(pooled(pgbouncer, app)) as conn:
        conn.execute("SELECT 1")
    assert len(pgbouncer.servers_of(app.user)) == 1  # kept after its client left
    rotate = ["rotate", *common, "--admin-url", app.admin_url.secret, "--client-ttl", "0s"]
    plan = cli(*rotate, "--retire", "drop", "--dry-run")
    assert plan.code == 0, plan.err
    pooler = f"pgbouncer {pgbouncer.host}:{pgbouncer.port}"
    assert f"writer URL directly on {app.admin_url.host}:{app.admin_url.port}" in plan.out
    assert f"writer URL through {pooler}" in plan.out
    assert (
        "5. retire (drop): one last reading of every instance, as the drain reads them (any "
        f"use there: back to the drain), then lock {app.user!r} and end the server "
        f"connections {pooler}" in plan.out
    )
    done = cli(*rotate, "--retire", "drop", "--quiet", "1s", "--yes")
    assert done.code == 0, done.err
    assert f"ended the 1 server connection(s) {pooler} kept of {app.user!r}" in done.err
    assert not app.user_exists(app.user)
    assert pgbouncer.servers_of(app.user) == []


def test_a_frozen_console_fails_within_the_db_timeout_or_the_lambdas_bound(
    registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PgBouncer stopped (SIGSTOP) answers nothing and closes nothing: its console waits
    as the engines do, CREDFLIP_DB_TIMEOUT or the Lambda's bound, not 10 s + 30 s."""
    app, pgbouncer, sqlite_store, layout, _url = registered
    stored = sqlite_store.get(layout.pooler_url)
    monkeypatch.setenv("CREDFLIP_DB_TIMEOUT", "2s")
    by_env = env_pooler(layout, stored)
    # The Lambda bounds its engine to a third of its margin, and the fleet's console with it.
    bounded = _bounded_engine(app.admin_url, margin=3.0)
    monkeypatch.delenv("CREDFLIP_DB_TIMEOUT")
    fleet = env_fleet(sqlite_store, layout, load_state(sqlite_store, layout), bounded)
    by_lambda = fleet.pooler
    assert by_env is not None and by_lambda is not None
    assert (by_env.console.connect_timeout, by_env.console.statement_timeout) == (2.0, 2.0)
    assert (by_lambda.console.connect_timeout, by_lambda.console.statement_timeout) == (1.0, 1.0)
    for pooler in (by_env, by_lambda):
        pooler.view(app.user)  # connected: the next call waits for an answer
    assert pgbouncer.process is not None
    with Frozen(pgbouncer.process.pid):
        for pooler, bound in ((by_env, 2.0), (by_lambda, 1.0)):
            for step in ("an answer", "a connect"):  # the second call connects anew
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable) as caught:
                    pooler.view(app.user)
                took = time.monotonic() - started
                # libpq's connect_timeout is whole seconds, 2 at least.
                assert took < max(bound, 2.0) + 4.0, f"{step}: {took:.1f}s ({caught.value})"
    fleet.close()
    bounded.close()


def test_a_client_that_logs_in_between_the_last_look_and_the_lock_is_not_cut_off(
    registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retire looks at PgBouncer's clients again once the old user is locked: one there
    came after the last look, in a transaction on a server connection of the old user. Its
    transaction goes on, the old user keeps its login, and the rotation drains again."""
    from credflip.rotation.phases import retire

    app, pgbouncer, sqlite_store, layout, url = registered
    real = retire.last_look
    late: list[psycopg.Connection[Any]] = []

    def last_look_then_a_client(ctx: Any) -> None:
        real(ctx)
        if not late:  # logs in to PgBouncer right before the lock, opens a transaction
            conn = client(url)
            conn.autocommit = False
            conn.execute("SELECT 1")
            late.append(conn)

    monkeypatch.setattr(retire, "last_look", last_look_then_a_client)
    events: list[Event] = []
    logins: list[bool] = []

    def note(event: Event) -> None:
        events.append(event)
        if isinstance(event, DrainProgress) and late and not late[0].closed:
            # Back in the drain: the late client's transaction goes on, then it leaves; the
            # old user logs in again meanwhile.
            late[0].execute("SELECT 2")
            late[0].commit()
            late[0].close()
            logins.append(connects(url))

    options = RotateOptions(client_ttl=0.0, quiet=1.0, drain_timeout=60.0)
    admin = app.admin_url
    result = rotate(sqlite_store, layout, admin_url=admin, options=options, on_event=note)
    assert result.finished
    assert late and late[0].closed and logins == [True]
    warnings = [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert [w.split(": one last reading")[0] for w in warnings] == [f"not retiring {app.user!r}"]
    assert f"1 client(s) on pgbouncer {pgbouncer.host}:{pgbouncer.port} (" in warnings[0]
    phases = [e.phase for e in events if isinstance(e, PhaseStarted)]
    assert phases[-5:] == [Phase.DRAIN, Phase.RETIRE, Phase.DRAIN, Phase.RETIRE, Phase.DONE]
    assert pgbouncer.servers_of(app.user) == []
    assert "no such user" in login_error(url)  # locked in the end: PgBouncer lacks it


def test_a_server_connection_pgbouncer_closed_between_two_samples_is_no_quiet(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """A client of the old user connects, runs a statement on PgBouncer's idle server
    connection and leaves, and PgBouncer closes that connection (it enforces
    server_lifetime when it takes one back), all between two samples: neither the client
    nor the connection nor its state_change is left to see. That sample is no quiet (the
    window starts over), as behind RDS Proxy; the next one is. With a group role its
    sessions run as the group from login, so pg_stat_statements counts none of its
    statements for the user (a connection opened before the drain's watch)."""
    url, console = pooled(pgbouncer, app), pgbouncer.console_url()
    commands.init(
        sqlite_store, layout, admin_url=app.admin_url, writer_url=url, pooler_url=console,
        group_role=app.group,
    )  # fmt: skip
    with engine_for(app.admin_url) as eng:  # init's own logins came before the setting
        eng.terminate(app.user)
    wait_until(lambda: pgbouncer.servers_of(app.user) == [], "PgBouncer lets them go")
    with client(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app.group,)
        conn.execute("SELECT 1")
    with engine_for(app.admin_url) as eng:
        fleet = env_fleet(sqlite_store, layout, load_state(sqlite_store, layout), eng)
        policy = DrainPolicy(client_ttl=1.0, quiet=10.0)
        trk = DrainTracker(policy, switched_at=-100.0, timeout_at=1e3)

        def sample(now: float) -> Any:
            return trk.observe(now, fleet.read(app.user, counting=True, position=None))

        sample(0.0)
        assert sample(0.5).verdict is Verdict.QUIET  # PgBouncer's idle connection: no use
        with client(url) as conn:
            conn.execute("SELECT 2")
        [server] = pgbouncer.servers_of(app.user)
        kept = PooledBackend(int(server["remote_pid"]), int(server["local_port"]))
        assert eng.terminate(app.user, only=[kept]) == 1
        wait_until(lambda: pgbouncer.servers_of(app.user) == [], "PgBouncer lets it go")
        closed = sample(1.0)
        assert closed.verdict is Verdict.IN_USE, closed.reasons
        assert closed.reasons == (
            f"1 server connection(s) of {app.user!r} on pgbouncer {pgbouncer.host}:"
            f"{pgbouncer.port} closed since the last sample: what they ran before cannot be told",
        )
        assert sample(1.5).verdict is Verdict.QUIET  # once
        fleet.close()


def test_pgbouncer_refusing_a_locked_color_is_an_authentication_failure(
    registered: Registered,
) -> None:
    """With auth_query PgBouncer refuses a user that may not log in with "no such user"
    (the lookup finds no row in pg_shadow): credflip's clients must take it for a refused
    login and re-resolve, as they do the server's own refusal."""
    app, _pgbouncer, _store, _layout, url = registered
    with engine_for(app.admin_url) as eng:
        eng.lock_user(app.user)
    with pytest.raises(psycopg.OperationalError) as caught:
        client(url).close()
    assert "no such user" in str(caught.value)
    assert is_auth_failure(caught.value)


def grouped_behind_pgbouncer(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """An env behind PgBouncer whose colors run as the group role, and no server
    connection of the old user yet (init's logins came before the setting)."""
    url, console = pooled(pgbouncer, app), pgbouncer.console_url()
    commands.init(
        sqlite_store, layout, admin_url=app.admin_url, writer_url=url, pooler_url=console,
        group_role=app.group,
    )  # fmt: skip
    with engine_for(app.admin_url) as eng:
        eng.terminate(app.user)
    wait_until(lambda: pgbouncer.servers_of(app.user) == [], "PgBouncer lets them go")


def request(pgbouncer: PrivatePgbouncer, app: App, database: str) -> int:
    """A client of the old user through PgBouncer: one statement on *database*, as the
    group role (nothing counts it for the user); the pid of the backend that ran it."""
    with client(pgbouncer.url(app.user, app.password, database)) as conn:
        row = conn.execute("SELECT current_user, pg_backend_pid()").fetchone()
    assert row is not None and row[0] == app.group
    return int(row[1])


@pytest.mark.parametrize("between", ["nothing", "a request on a connection then closed"])
def test_a_server_connection_that_served_a_request_and_closed_between_two_runs_is_no_quiet(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout, between: str
) -> None:
    """PgBouncer keeps two server connections of the old user, in two databases: A used
    first, B last (the newest request). Between two runs of the drain a client runs a
    statement on A, and A closes (the server ended it; PgBouncer's server_lifetime would).
    B's request is still the newest, nothing counted the statement for the old user: the
    counters are as the first run left them. The marks the first run kept of A and B
    tell: the window it began must not carry over."""
    grouped_behind_pgbouncer(app, pgbouncer, sqlite_store, layout)
    reports = f"{app.database}_reports"
    with app.su() as conn:
        create = sql.SQL("CREATE DATABASE {} OWNER {}")
        conn.execute(create.format(sql.Identifier(reports), sql.Identifier(app.user)))
    pgbouncer.serve(reports)
    a = request(pgbouncer, app, app.database)
    b = request(pgbouncer, app, reports)
    assert sorted(int(s["remote_pid"]) for s in pgbouncer.servers_of(app.user)) == sorted([a, b])
    # Paused in the drain at its deadline, the quiet window running (60 s are needed).
    options = RotateOptions(client_ttl=0.2, quiet=60.0, deadline=time.monotonic() + 8.0)
    first = rotate(sqlite_store, layout, admin_url=app.admin_url, options=options)
    assert not first.finished and first.stopped_in is Phase.DRAIN, first
    if between != "nothing":
        assert request(pgbouncer, app, app.database) == a  # the only one there
        [kept] = [s for s in pgbouncer.servers_of(app.user) if int(s["remote_pid"]) == a]
        with engine_for(app.admin_url) as eng:
            assert eng.terminate(app.user, only=[PooledBackend(a, int(kept["local_port"]))]) == 1
        wait_until(
            lambda: [int(s["remote_pid"]) for s in pgbouncer.servers_of(app.user)] == [b],
            "PgBouncer lets A go",
        )
    seen: list[DrainStatus] = []

    def note(event: Event) -> None:
        if isinstance(event, DrainProgress):
            seen.append(event.status)

    options = RotateOptions(client_ttl=0.2, quiet=60.0, deadline=time.monotonic() + 3.0)
    second = rotate(sqlite_store, layout, admin_url=app.admin_url, options=options, on_event=note)
    assert not second.finished and second.stopped_in is Phase.DRAIN
    if between == "nothing":
        assert seen[0].reasons == () and seen[0].quiet > 0.0  # carried over
    else:
        assert seen[0].reasons == (
            f"1 server connection(s) of the old user on pgbouncer {pgbouncer.host}:"
            f"{pgbouncer.port} closed or served a request since the last run: what they ran "
            f"cannot be told",
        )
        assert seen[0].verdict is Verdict.IN_USE and seen[0].quiet == 0.0
        assert seen[-1].quiet < 4.0  # the window started over in this run


def test_the_server_connections_the_drain_ends_are_no_unknown_at_the_retires_last_look(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """With --terminate the drain ends the old user's sessions idle for the whole window,
    PgBouncer's server connections with them: the retire's last look does not take them
    for connections that closed unseen (which would send the rotation back to the
    drain), neither by the evidence nor by PgBouncer's comparison with the last sample."""
    grouped_behind_pgbouncer(app, pgbouncer, sqlite_store, layout)
    request(pgbouncer, app, app.database)
    holder = app.connect(app.url)  # straight to the server, idle: held, then ended
    events: list[Event] = []
    options = RotateOptions(client_ttl=0.2, quiet=1.0, terminate=True)
    result = rotate(
        sqlite_store, layout, admin_url=app.admin_url, options=options, on_event=events.append
    )
    assert result.finished and result.terminated == 2  # the held session, PgBouncer's
    phases = [e.phase for e in events if isinstance(e, PhaseStarted)]
    assert phases.count(Phase.DRAIN) == 1 and phases[-2:] == [Phase.RETIRE, Phase.DONE]
    assert pgbouncer.servers_of(app.user) == []
    holder.close()
