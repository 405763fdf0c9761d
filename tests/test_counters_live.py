"""A login counter that stops counting in the middle of a drain, on real servers: MariaDB's
userstat lost in a restart (``init`` turns it on with SET GLOBAL, which a restart
forgets) or turned off, PostgreSQL's pg_stat_statements stopped by a reload. A legacy
client keeps using the old user all along: the drain must not retire it, must say which
counter is gone and how to turn it on, and ``status`` names the gap like any other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from apps import App, MyApp, make_app, make_my_app
from clusters import Cluster, Mariadb
from helpers import connects, wait_until
from legacy_clients import Legacy
from psycopg import sql
from servers import MY_ADMIN, PrivateMariadb

from credflip import commands
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.rotation import DrainProgress, Event, RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import libpq_kwargs

#: The drain gives up 5 s after the switch; it would finish 2 s after the counter stops.
OPTIONS = {"client_ttl": 0.2, "quiet": 2.0, "drain_timeout": 5.0}


@pytest.fixture(scope="module")
def userstat_server() -> Iterator[tuple[PrivateMariadb, Mariadb]]:
    """MariaDB as it ships (userstat off), with an admin that may SET GLOBAL (SUPER)."""
    server = PrivateMariadb().start()
    try:
        db = Mariadb(server.add_admin(), Path("/nonexistent"), server.port)
        server.sql(f"GRANT SUPER ON *.* TO '{MY_ADMIN}'@'%'")
        yield server, db
    finally:
        server.stop()


def drain_with_legacy_client(
    app: App | MyApp, store: SqliteStore, layout: Layout, stop_counter: Callable[[], None]
) -> tuple[DrainTimeout, Legacy]:
    """Rotate while a client keeps using the old user; *stop_counter* runs at the third
    sample after the cache wait. The drain must time out (raised), not retire."""
    samples = 0

    def on_event(event: Event) -> None:
        nonlocal samples
        if isinstance(event, DrainProgress) and event.status.caches_in == 0:
            samples += 1
            if samples == 3:
                stop_counter()

    with Legacy(app, app.url, period=0.3) as client, pytest.raises(DrainTimeout) as raised:
        rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(**OPTIONS),
            on_event=on_event,
        )
    assert samples > 3
    return raised.value, client


def assert_kept(app: App | MyApp, client: Legacy) -> None:
    """The old user still logs in, and the client was never refused as locked."""
    assert connects(app.url)
    assert not [e for e in client.errors if app.locked_marker in e], client.errors


@pytest.mark.parametrize("how", ["restart", "set global off"])
def test_userstat_stopped_mid_drain_keeps_the_old_user(
    userstat_server: tuple[PrivateMariadb, Mariadb], how: str, tmp_path: Path
) -> None:
    server, db = userstat_server
    app = make_my_app(db, rich=False)
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("userstat")
    init = commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    assert init.counter_gaps == [] and db.sql("SELECT @@userstat") == [(1,)]

    def stop() -> None:
        if how == "restart":
            server.halt()
            server.resume()  # without userstat: SET GLOBAL did not outlive it
        else:
            db.sql("SET GLOBAL userstat = OFF")

    timeout, client = drain_with_legacy_client(app, store, layout, stop)
    text = str(timeout)
    assert "its login counter is gone (userstat is OFF" in text, text
    assert "SET GLOBAL userstat = ON" in text and "under [mysqld]" in text
    assert_kept(app, client)
    gaps = commands.status(store, layout, admin_url=app.admin_url).counter_gaps
    assert any("counts no logins" in g and "SET GLOBAL userstat = ON" in g for g in gaps), gaps


def reload_with(cluster: Cluster, name: str, value: str | None) -> None:
    """``ALTER SYSTEM SET name = value`` (RESET for None) and a reload, waited for."""
    with cluster.su() as su:
        if value is None:
            su.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
        else:
            su.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value))
            )
        su.execute("SELECT pg_reload_conf()")
    want = value or ("top" if name.endswith("track") else "auto")
    wait_until(lambda: setting(cluster, name) == want, f"{name} = {want} after the reload")


def setting(cluster: Cluster, name: str) -> str:
    with psycopg.connect(**libpq_kwargs(cluster.admin_url("postgres"))) as conn:
        row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
        assert row is not None
        return str(row[0])


@pytest.mark.parametrize(
    ("name", "value"), [("pg_stat_statements.track", "none"), ("compute_query_id", "off")]
)
def test_a_reload_that_stops_pg_stat_statements_mid_drain_keeps_the_old_user(
    own_cluster: Cluster, name: str, value: str, tmp_path: Path
) -> None:
    app = make_app(own_cluster, rich=False)
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("reload")
    init = commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    assert init.counter_gaps == []
    try:
        timeout, client = drain_with_legacy_client(
            app, store, layout, lambda: reload_with(own_cluster, name, value)
        )
        text = str(timeout)
        assert f"its login counter is gone ({name} is '{value}' on this server" in text, text
        assert f"ALTER SYSTEM SET {name} = " in text and "pg_reload_conf()" in text
        assert_kept(app, client)
        gaps = commands.status(store, layout, admin_url=app.admin_url).counter_gaps
        assert any("counts no logins" in g and f"{name} is '{value}'" in g for g in gaps), gaps
    finally:
        reload_with(own_cluster, name, None)
