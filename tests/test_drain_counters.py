"""The drain's login counters on real servers: rotate refuses where an instance has none
(before anything changes, the dry run alike), --sessions-only accepts the risk (for one run,
or stored by init and revoked by --require-counters), and init enables a counter where the
admin may (pg_stat_statements, MariaDB's userstat)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import ENGINES, AnyApp, App, engine_app, make_app, make_my_app, my_hash
from clusters import PG_VERSIONS, Cluster, Mariadb, start_cluster
from helpers import FAST, command, connects, dump, fresh, login_error, rotate_args
from servers import PrivateMariadb

from credflip import commands
from credflip.layout import Color, Layout
from credflip.rotation import RotateOptions, new_password, rollback, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore


@pytest.fixture(scope="module")
def mariadb_plain() -> Iterator[Mariadb]:
    """A private MariaDB as it ships: neither performance_schema nor userstat."""
    server = PrivateMariadb().start()
    try:
        yield Mariadb(server.add_admin(), Path("/nonexistent/general.log"), port=server.port)
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
def counterless_app(request: pytest.FixtureRequest) -> AnyApp:
    if request.param == "mysql":
        return make_my_app(request.getfixturevalue("mariadb_plain"))
    return engine_app(request, request.param, counters=False)


def roles_state(app: AnyApp) -> Any:
    return [
        (u, app.user_exists(u), connects(app.url) if u == app.user else None, app.rights(u))
        for u in (app.user, app.green)
    ]


def init_cli(app: AnyApp, store: SqliteStore, layout: Layout, cli: Any, *extra: str) -> Any:
    result = cli(*command("init", app, store, layout, "--writer-url", app.url.secret, *extra))
    assert result.code == 0, result.err
    return result


def how_to_count(app: AnyApp) -> str:
    """The enabling step the messages name for a server without a login counter."""
    if app.engine == "postgresql":
        return f"CREATE EXTENSION pg_stat_statements in database {app.database}"
    return "SET GLOBAL userstat = ON"


def unchanged(app: AnyApp, store: SqliteStore) -> Any:
    """What a refused rotation must leave as it was: every parameter, both users."""
    return (dump(store), roles_state(app))


def drain_json(app: AnyApp, store: SqliteStore, layout: Layout, cli: Any) -> Any:
    status = cli(*command("status", app, store, layout, "--json"))
    assert status.code == 0, status.err
    return json.loads(status.out)["drain"]


def assert_refused(result: Any, app: AnyApp, *, head: str = "no login counter") -> str:
    """One error line (exit 1) naming the instance, the step that enables a counter, the way out."""
    assert result.code == 1, result.err
    (line,) = [x for x in result.err.splitlines() if x.startswith("credflip: error:")]
    assert line.startswith(f"credflip: error: {head}"), line
    assert f"{app.admin_url.host}:{app.admin_url.port} counts no logins" in line
    assert how_to_count(app) in line and "--sessions-only" in line
    return line


def test_without_a_counter_rotate_refuses_before_anything_changes(
    counterless_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = counterless_app
    init = init_cli(app, sqlite_store, layout, cli)
    assert "drain signals:" in init.out and how_to_count(app) in init.out
    assert "no login counter for" in init.out
    assert "rotate refuses until every instance counts logins" in init.out
    if app.engine == "mysql":
        # This admin has no SUPER: init could not turn userstat on, and did not.
        assert app.mariadb.sql("SELECT @@userstat") == [(0,)]  # type: ignore[union-attr]

    before = unchanged(app, sqlite_store)
    # The dry run reports the error the real run hits first.
    dry = cli(*rotate_args(app, sqlite_store, layout, "--dry-run"))
    assert_refused(dry, app)
    refused = cli(*rotate_args(app, sqlite_store, layout, *FAST))
    line = assert_refused(refused, app)
    assert refused.err.count("\n") == 1 and line.endswith("nothing was changed")
    assert unchanged(app, sqlite_store) == before
    assert fresh(sqlite_store, layout).color is Color.BLUE
    assert load_state(sqlite_store, layout).current is None

    drain = drain_json(app, sqlite_store, layout, cli)
    assert [i["address"] for i in drain["instances"]] == [
        f"{app.admin_url.host}:{app.admin_url.port}"
    ]
    assert {s["name"]: s["available"] for s in drain["signals"] if s["cumulative"]}
    assert not any(s["available"] for s in drain["signals"] if s["cumulative"])
    assert drain["counter_gaps"] and drain["sessions_only"] is False


def test_sessions_only_for_one_run_drains_with_the_accepted_risk(
    counterless_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = counterless_app
    init_cli(app, sqlite_store, layout, cli)
    dry = cli(*rotate_args(app, sqlite_store, layout, "--dry-run", "--sessions-only"))
    assert dry.code == 0, dry.err
    assert "draining on open sessions alone there: a risk accepted with --sessions-only" in dry.out
    run = cli(
        *rotate_args(
            app,
            sqlite_store,
            layout,
            *FAST,
            "--sessions-only",
        )
    )
    assert run.code == 0, run.err
    warning = [line for line in run.err.splitlines() if line.startswith("credflip: warning:")]
    assert len(warning) == 1, run.err
    assert "risk accepted with --sessions-only" in warning[0] and how_to_count(app) in warning[0]
    assert "may be missed" in warning[0]
    assert fresh(sqlite_store, layout).color is Color.GREEN
    assert app.locked_marker in login_error(app.url)
    # For that run only: the next one refuses again, changing nothing.
    assert load_state(sqlite_store, layout).sessions_only is False
    assert drain_json(app, sqlite_store, layout, cli)["sessions_only"] is False
    before = unchanged(app, sqlite_store)
    assert_refused(
        cli(*rotate_args(app, sqlite_store, layout, *FAST)),
        app,
    )
    assert unchanged(app, sqlite_store) == before


def test_init_sessions_only_is_stored_shown_and_revoked_by_require_counters(
    counterless_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = counterless_app
    init = init_cli(app, sqlite_store, layout, cli, "--sessions-only")
    assert "sessions only: stored for this env" in init.out
    assert load_state(sqlite_store, layout).sessions_only is True
    assert drain_json(app, sqlite_store, layout, cli)["sessions_only"] is True
    text = cli(*command("status", app, sqlite_store, layout))
    assert "sessions only: stored for this env" in text.out

    run = cli(*rotate_args(app, sqlite_store, layout, *FAST))
    assert run.code == 0, run.err
    assert "risk accepted with --sessions-only" in run.err
    assert fresh(sqlite_store, layout).color is Color.GREEN

    before = unchanged(app, sqlite_store)
    revoked = cli(*rotate_args(app, sqlite_store, layout, "--require-counters"))
    line = assert_refused(revoked, app, head="--require-counters: no login counter")
    assert line.endswith("nothing else was changed")
    (note,) = [x for x in revoked.err.splitlines() if x != line]
    assert "stored --sessions-only is cleared" in note
    # The one change: the stored choice is gone, shown by status; the rest is as it was.
    assert load_state(sqlite_store, layout).sessions_only is False
    state_name = layout.state
    assert [p for p in unchanged(app, sqlite_store)[0] if p[0] != state_name] == [
        p for p in before[0] if p[0] != state_name
    ]
    assert unchanged(app, sqlite_store)[1] == before[1]
    assert drain_json(app, sqlite_store, layout, cli)["sessions_only"] is False
    assert_refused(cli(*rotate_args(app, sqlite_store, layout)), app)


def test_a_resumed_rotation_whose_counter_vanished_waits_for_the_operator(
    cluster: Cluster, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = make_app(cluster, rich=False)
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    holder = app.open(app.url)  # a client still on blue: the drain times out, resumable
    try:
        held = cli(
            *rotate_args(
                app,
                sqlite_store,
                layout,
                *FAST,
                "--drain-timeout",
                "500ms",
            )
        )
        assert held.code == 4, held.err
        app.admin_sql("DROP EXTENSION pg_stat_statements")
        before = unchanged(app, sqlite_store)
        refused = cli(*rotate_args(app, sqlite_store, layout, *FAST))
        assert_refused(refused, app)
        assert unchanged(app, sqlite_store) == before
        current = load_state(sqlite_store, layout).current
        assert current is not None and current.phase.value == "drain"
        assert fresh(sqlite_store, layout).color is Color.GREEN and connects(app.url)
    finally:
        holder.close()
    # The operator accepts the risk for this run: the drain goes on and finishes.
    done = cli(
        *rotate_args(
            app,
            sqlite_store,
            layout,
            *FAST,
            "--sessions-only",
        )
    )
    assert done.code == 0, done.err
    assert "risk accepted with --sessions-only" in done.err
    assert load_state(sqlite_store, layout).current is None
    assert app.locked_marker in login_error(app.url)


@pytest.fixture(scope="module")
def unloaded_cluster() -> Iterator[Cluster]:
    """PostgreSQL as it ships: pg_stat_statements not in shared_preload_libraries."""
    cl = start_cluster(PG_VERSIONS[0], shared_preload_libraries="")
    try:
        yield cl
    finally:
        cl.pg.stop()


def test_without_the_preload_even_a_superuser_init_cannot_count_and_rotate_refuses(
    unloaded_cluster: Cluster, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = make_app(unloaded_cluster, rich=False, counters=False)
    superuser = unloaded_cluster.pg.url(
        "postgres", unloaded_cluster.pg.superuser_password, app.database
    )
    result = commands.init(sqlite_store, layout, admin_url=superuser, writer_url=app.url)
    assert result.enabled == []
    (gap,) = result.counter_gaps
    assert "add pg_stat_statements to shared_preload_libraries and restart the server" in gap
    before = unchanged(app, sqlite_store)
    refused = cli(*rotate_args(app, sqlite_store, layout))
    assert refused.code == 1 and refused.err.count("\n") == 1
    assert "shared_preload_libraries" in refused.err and "--sessions-only" in refused.err
    assert unchanged(app, sqlite_store) == before


def test_init_turns_userstat_on_when_the_mariadb_admin_may(
    mariadb_plain: Mariadb, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = make_my_app(mariadb_plain, rich=False)
    password = new_password()
    mariadb_plain.sql(
        "CREATE USER 'cft_super'@'%%' IDENTIFIED BY PASSWORD %s", args=(my_hash(password),)
    )
    mariadb_plain.sql(
        "GRANT CREATE USER, PROCESS, CONNECTION ADMIN, SUPER ON *.* TO 'cft_super'@'%'",
        "GRANT SELECT ON mysql.* TO 'cft_super'@'%'",
        f"GRANT ALL PRIVILEGES ON `{app.database}`.* TO 'cft_super'@'%' WITH GRANT OPTION",
    )
    admin = dataclasses.replace(app.admin_url, user="cft_super", password=password)
    try:
        init = cli(
            "init",
            "--env",
            layout.env,
            "--store",
            sqlite_store.url,
            "--admin-url",
            admin.secret,
            "--writer-url",
            app.url.secret,
        )
        assert init.code == 0, init.err
        assert mariadb_plain.sql("SELECT @@userstat") == [(1,)]
        (said,) = [line for line in init.out.splitlines() if "SET GLOBAL userstat = ON" in line]
        assert "not kept across a restart" in said and "userstat = ON under [mysqld]" in said
        assert "DB parameter group" in said
        assert "no login counter" not in init.out
        assert password not in init.text
        # Counted now: the rotation needs no --sessions-only.
        run = cli(
            "rotate",
            "--env",
            layout.env,
            "--store",
            sqlite_store.url,
            "--admin-url",
            admin.secret,
            "--yes",
            *FAST,
        )
        assert run.code == 0, run.err
        assert "credflip: warning" not in run.err
    finally:
        mariadb_plain.sql("SET GLOBAL userstat = OFF", "DROP USER 'cft_super'@'%'")


def test_init_creates_the_extension_when_the_admin_may(
    cluster: Cluster, sqlite_store: SqliteStore, layout: Layout
) -> None:
    app = make_app(cluster, counters=False)
    superuser = cluster.pg.url("postgres", cluster.pg.superuser_password, app.database)
    result = commands.init(sqlite_store, layout, admin_url=superuser, writer_url=app.url)
    assert result.enabled == [f"created extension pg_stat_statements in database {app.database}"]
    assert result.counter_gaps == []
    with app.su() as conn:
        assert conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()


def test_after_a_rollback_rotate_refuses_when_the_predrained_user_cannot_be_counted(
    app: App, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """The next rotation drains green first; when green's logins cannot be told apart (a
    role setting of its own), that predrain would run on open sessions alone. Refused
    like the drain, before anything changes, with --sessions-only as the way out."""
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert rotate(sqlite_store, layout, admin_url=app.admin_url, options=options).finished
    assert rollback(sqlite_store, layout, admin_url=app.admin_url).flipped
    app.admin_sql(f'ALTER ROLE "{app.green}" SET role = "{app.green}"')
    before = unchanged(app, sqlite_store)
    for extra in ((), ("--dry-run",)):
        result = cli(*rotate_args(app, sqlite_store, layout, *FAST, *extra))
        assert result.code == 1, result.err
        (line,) = [x for x in result.err.splitlines() if x.startswith("credflip: error:")]
        assert line.startswith("credflip: error: no login counter"), line
        assert f"{app.green!r} logs in as role {app.green!r}" in line and "--sessions-only" in line
        assert unchanged(app, sqlite_store) == before
    run = cli(*rotate_args(app, sqlite_store, layout, *FAST, "--sessions-only"))
    assert run.code == 0, run.err
    assert fresh(sqlite_store, layout).color is Color.GREEN
