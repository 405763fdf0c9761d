"""Clients that follow rotations: SQLAlchemy, psycopg_pool, retry on auth failure."""

from __future__ import annotations

from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy
from apps import App
from clusters import Mariadb
from following import assert_drain_unheld, change_password_behind_the_back
from helpers import fresh

from credflip import call_with_refresh, commands, is_auth_failure
from credflip.demo import Traffic
from credflip.errors import DrainTimeout
from credflip.layout import Color, Layout
from credflip.psycopg import connection_pool
from credflip.resolver import Resolver
from credflip.rotation import RotateOptions, rotate
from credflip.sqlalchemy import create_engine, sqlalchemy_url
from credflip.stores.sqlite import SqliteStore

TTL = 0.5


def initialise(app: App, store: SqliteStore, layout: Layout) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)


def sessions_by_user(app: App) -> dict[str, int]:
    with app.su() as conn:
        rows = conn.execute(
            "SELECT usename, count(*) FROM pg_stat_activity WHERE usename = ANY(%s) GROUP BY 1",
            ([app.user, app.green],),
        ).fetchall()
    return {str(u): int(n) for u, n in rows}


def rotate_under(
    traffic: Traffic, app: App, store: SqliteStore, layout: Layout, times: int
) -> list[Any]:
    traffic.start()
    results = []
    try:
        for _ in range(times):
            results.append(
                rotate(
                    store,
                    layout,
                    admin_url=app.admin_url,
                    options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=20),
                )
            )
    finally:
        traffic.stop()
    return results


def test_sqlalchemy_engine_follows_rotations_under_load(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=TTL)
    engine = create_engine(layout.env, resolver=resolver, pool_size=4, max_overflow=0)
    assert engine.url.password is None and engine.url.drivername == "postgresql+psycopg"

    def request(worker: int) -> str:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO orders (worker) VALUES (:w)"), {"w": worker})
            return str(conn.execute(sqlalchemy.text("SELECT session_user")).scalar())

    traffic = Traffic(request, workers=4, pause=0.01)
    results = rotate_under(traffic, app, store, layout, 3)
    assert traffic.failed == 0, dict(traffic.errors)
    assert set(traffic.by_color) == {app.user, app.green}
    for result in results:
        assert_drain_unheld(result, TTL)
    assert sessions_by_user(app).get(app.user, 0) == 0  # green is active now
    engine.dispose()


def test_idle_sqlalchemy_pool_lets_the_drain_finish(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=TTL)
    engine = create_engine(layout.env, resolver=resolver, pool_size=3)
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        conn.close()  # back in the pool, idle, logged in as blue
    assert sessions_by_user(app) == {app.user: 3}
    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=20),
    )
    assert_drain_unheld(result, TTL)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT session_user")).scalar() == app.green
    engine.dispose()


def test_psycopg_pool_follows_rotations_under_load(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=TTL)
    with connection_pool(layout.env, resolver=resolver, min_size=2, max_size=4) as pool:
        pool.wait()

        def request(worker: int) -> str:
            with pool.connection() as conn:
                conn.execute("INSERT INTO orders (worker) VALUES (%s)", (worker,))
                return str(conn.info.user)

        traffic = Traffic(request, workers=4, pause=0.01)
        results = rotate_under(traffic, app, store, layout, 3)
        assert traffic.failed == 0, dict(traffic.errors)
        assert set(traffic.by_color) == {app.user, app.green}
        for result in results:
            assert_drain_unheld(result, TTL)
        assert sessions_by_user(app).get(app.user, 0) == 0


def test_call_with_refresh_after_a_password_change(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=3600)
    resolver.resolve(layout.env)
    change_password_behind_the_back(app, store, layout, end_sessions=False)
    attempts: list[str] = []

    def work(endpoints: Any) -> int:
        attempts.append(endpoints.writer_url)
        with psycopg.connect(endpoints.writer_url) as conn:
            return int(conn.execute("SELECT 42").fetchone()[0])  # type: ignore[index]

    assert call_with_refresh(layout.env, work, resolver=resolver) == 42
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert resolver.reads == 2  # the warm-up and exactly one refresh

    # Any other error is not retried.
    with pytest.raises(ZeroDivisionError):
        call_with_refresh(layout.env, lambda _e: 1 // 0, resolver=resolver)
    assert resolver.reads == 2


def test_sqlalchemy_reconnects_after_a_password_change(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=3600)
    engine = create_engine(layout.env, resolver=resolver, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1"))
    change_password_behind_the_back(app, store, layout, end_sessions=False)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    assert resolver.reads == 2
    engine.dispose()


def test_psycopg_pool_reconnects_after_a_password_change(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=3600)
    with connection_pool(
        layout.env, resolver=resolver, min_size=0, max_size=1, max_idle=0.1
    ) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        change_password_behind_the_back(app, store, layout, end_sessions=False)
        pool.drain()  # new connections log in with the cached, now wrong, password
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert resolver.reads == 2


def test_is_auth_failure_recognises_real_errors(app: App, mariadb: Mariadb) -> None:
    with pytest.raises(psycopg.OperationalError) as pg_wrong:
        psycopg.connect(app.url.with_credentials(app.user, "nope").secret).close()
    assert is_auth_failure(pg_wrong.value)
    with pytest.raises(psycopg.OperationalError) as pg_down:
        psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2").close()
    assert not is_auth_failure(pg_down.value)
    with pytest.raises(pymysql.err.OperationalError) as my_wrong:
        pymysql.connect(host="127.0.0.1", port=mariadb.port, user="credflip_nobody", password="x")
    assert is_auth_failure(my_wrong.value)
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(app.url.with_credentials(app.user, "nope").secret),
        poolclass=sqlalchemy.pool.NullPool,
    )
    with pytest.raises(sqlalchemy.exc.OperationalError) as wrapped:
        engine.connect()
    assert is_auth_failure(wrapped.value)
    assert not is_auth_failure(ValueError("password authentication failed"))


def test_resolving_is_what_the_pointer_says(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    assert fresh(store, layout).color is Color.BLUE


def test_psycopg_pool_opened_by_its_constructor_follows_too(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    """Found by the soak: a pool opened by ``connection_pool()`` itself (no ``with``) did
    not watch the color, and the check put old-color connections back into the pool, so
    its idle connections kept every drain waiting."""
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=TTL)
    pool = connection_pool(layout.env, resolver=resolver, min_size=2, max_size=2)
    try:
        pool.wait()
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        result = rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=20),
        )
        assert_drain_unheld(result, TTL)
        with pool.connection() as conn:
            assert conn.info.user == app.green
    finally:
        pool.close()


def test_psycopg_pool_check_replaces_an_old_color_connection(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    """The check alone must replace, not recycle, an old-color connection."""
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=3600)
    with connection_pool(layout.env, resolver=resolver, min_size=1, max_size=1) as pool:
        pool._watcher.stop()  # the check alone
        with pool.connection() as conn:
            assert conn.info.user == app.user
        with pytest.raises(DrainTimeout):  # the idle connection is still of blue
            rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(client_ttl=0.1, quiet=0.1, drain_timeout=0.5),
            )
        resolver.refresh(layout.env)
        with pool.connection(timeout=5) as conn:
            assert conn.info.user == app.green
            assert conn.execute("SELECT 1").fetchone() == (1,)
