"""The lock and statement timeouts every statement credflip sends runs with (issue 19): set
on each connection of a plan (again on one that replaced a broken one), on the statement
that creates pg_stat_statements and on verify's ``--probe``; and the client guard that
has the server stop a statement it gave up on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from apps import ENGINES, AnyApp, App, MyApp, engine_app, make_app
from clusters import Cluster
from faults import Frozen
from helpers import command, wait_until
from psycopg import sql
from test_lock_queue import backup_lock, holding

from credflip.engines import engine_for
from credflip.engines.base import Step
from credflip.engines.locks import LockWait
from credflip.errors import DatabaseUnavailable, EngineError
from credflip.layout import Layout
from credflip.stores.sqlite import SqliteStore


def test_the_client_guard_cancels_the_statement_on_the_server(cluster: Cluster) -> None:
    app = make_app(cluster, rich=False)
    with engine_for(app.admin_url, statement_timeout=1.0) as eng:
        with pytest.raises(DatabaseUnavailable, match="did not answer within 1s"):
            eng._run("SELECT pg_sleep(30)")  # type: ignore[attr-defined]

        def cancelled() -> bool:
            with app.su() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                    "AND state = 'active'"
                ).fetchone()
                return row == (0,)

        wait_until(cancelled, "cancel of the statement on the server")


def test_the_client_guard_kills_the_statement_on_mariadb(request: pytest.FixtureRequest) -> None:
    """A statement the client gave up on must not run later, when the lock comes free."""
    app = engine_app(request, "mysql", rich=False)
    assert isinstance(app, MyApp)
    late = f"{app.user}_late"
    with backup_lock(app) as hold:
        with (
            engine_for(app.admin_url, statement_timeout=1.0) as eng,
            pytest.raises(DatabaseUnavailable),
        ):
            eng._run(f"CREATE USER '{late}'@'%'")  # type: ignore[attr-defined]

        def killed() -> bool:
            return not app.mariadb.sql(
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE INFO LIKE %s",
                args=(f"CREATE USER '{late}'%",),
            )

        wait_until(killed, "kill of the statement on the server")
        hold.end()
    assert not app.user_exists(late)


def test_settings_reach_the_server(any_app: AnyApp, caplog: pytest.LogCaptureFixture) -> None:
    """Every plan's connection runs with the lock and statement timeouts; MySQL's lock
    timeout is whole seconds, which the operator is told once."""
    with engine_for(any_app.admin_url, statement_timeout=10.0) as eng:
        eng.lock_wait = LockWait(timeout=0.25)
        eng.lock_user(any_app.user)
        eng.unlock_user(any_app.user)
        cur = eng.conn.cursor()  # type: ignore[attr-defined]
        if isinstance(any_app, App):
            cur.execute(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
            )
            assert cur.fetchone() == ("250ms", "9s")
        else:
            cur.execute(
                "SELECT @@lock_wait_timeout, @@innodb_lock_wait_timeout, @@max_statement_time"
            )
            assert tuple(cur.fetchone()) == (1, 1, 9.0)
    noted = [r.getMessage() for r in caplog.records if "whole seconds" in r.getMessage()]
    assert noted == (
        []
        if isinstance(any_app, App)
        else [
            "credflip: warning: MySQL and MariaDB wait for locks in whole seconds: "
            "--lock-timeout 250ms waits up to 1s there"
        ]
    )


def test_the_cli_takes_the_lock_timeout(app: App, tmp_path: Path, cli: Any) -> None:
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("env")
    init = cli(*command("init", app, store, layout, "--writer-url", app.url.secret,
                        "--lock-timeout", "300ms"))  # fmt: skip
    assert init.code == 0, init.err
    assert "SET lock_timeout = '300ms'" in app.server_log()
    plan = cli(*command("rotate", app, store, layout, "--dry-run", "--lock-timeout", "250ms"))
    assert plan.code == 0, plan.err
    assert "    SET lock_timeout = '250ms';\n    SET statement_timeout = '29000ms';" in plan.out


def test_a_connection_that_replaced_a_broken_one_gets_the_plans_timeouts(app: App) -> None:
    """The client guard gave up on a frozen backend: the plan's cleanup steps run on a new
    connection, which gets the plan's lock and statement timeouts first."""
    with engine_for(app.admin_url, statement_timeout=2.0) as eng:
        eng.lock_wait = LockWait(timeout=0.25)
        plan = [Step(sql.SQL("SELECT 1")), Step(sql.SQL("SELECT 2"), cleanup=True)]
        with Frozen(eng.conn.info.backend_pid), pytest.raises(DatabaseUnavailable):  # type: ignore[attr-defined]
            eng.execute(plan)
        row = eng.conn.execute(  # type: ignore[attr-defined]
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        ).fetchone()
    assert row == ("250ms", "1800ms")


def test_creating_pg_stat_statements_waits_no_longer_than_the_lock_timeout(
    cluster: Cluster,
) -> None:
    app = make_app(cluster, rich=False, counters=False)
    superuser = cluster.pg.url("postgres", cluster.pg.superuser_password, app.database)
    before = len(app.server_log())
    with app.su() as blocker, engine_for(superuser, statement_timeout=3.0) as eng:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE pg_catalog.pg_extension IN SHARE MODE")
        eng.lock_wait = LockWait(timeout=0.25, budget=0)
        assert eng.enable_signals() == []  # signals() says what is missing
        blocker.execute("ROLLBACK")
        assert eng.enable_signals() == [
            f"created extension pg_stat_statements in database {app.database}"
        ]
    log = app.server_log()[before:]
    assert re.search(
        r"canceling statement due to lock timeout\n(?:.*CONTEXT:.*\n|\t.*\n)*"
        r".*STATEMENT:  CREATE EXTENSION",
        log,
    ), log[-3000:]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_the_probe_waits_for_a_lock_no_longer_than_the_lock_timeout(
    request: pytest.FixtureRequest, engine_name: str
) -> None:
    app = engine_app(request, engine_name, rich=False)
    if isinstance(app, App):
        conn, lock = app.su(), ("BEGIN", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        release = "ROLLBACK"
    else:
        conn, lock = app.mariadb.root(), (f"LOCK TABLES `{app.database}`.orders WRITE",)
        release = "UNLOCK TABLES"
    with holding(conn, lock, release), engine_for(app.admin_url, statement_timeout=5.0) as eng:
        eng.lock_wait = LockWait(timeout=0.25)
        with pytest.raises(EngineError, match=r"(?i)probe failed for .*lock (wait )?timeout"):
            eng.verify(app.url, probe="SELECT count(*) FROM orders")
