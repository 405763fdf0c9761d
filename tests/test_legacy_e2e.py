"""Legacy clients on real servers: the drain names the clients that do not follow.

A *legacy* client here is a job that was given blue's URL directly (it never
asks credflip's resolver) and names itself (PostgreSQL ``application_name``,
MySQL/MariaDB ``program_name``). It reconnects every half second and runs a
few queries on each connection, so that the drain sees its sessions; on
PostgreSQL its logins after the switch run as the old user itself, so
``pg_stat_statements`` counts its statements and the drain shows their text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from apps import App, MyApp, engine_app, make_my_app
from clusters import PG_VERSIONS, Mariadb
from helpers import command, connects, fresh
from legacy_clients import LegacyJob
from servers import PrivateMariadb

from credflip import commands
from credflip.errors import DrainTimeout
from credflip.layout import Color, Layout
from credflip.legacy import LegacyReport
from credflip.rotation import DrainProgress, Event, RotateOptions, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl, libpq_kwargs, pymysql_kwargs

PROGRAM = "billing-cron"
PG_QUERY = "SELECT count(*) FROM billing.invoices WHERE total > 10"
MY_QUERY = "SELECT count(*) FROM invoices WHERE total > 10"


def pg_job(url: DbUrl) -> LegacyJob:
    """A connection every half second, named, running five queries."""

    def session(job: LegacyJob) -> None:
        kwargs = libpq_kwargs(url)
        with psycopg.connect(**kwargs, application_name=PROGRAM, autocommit=True) as conn:
            for _ in range(5):
                conn.execute(PG_QUERY).fetchall()
                job.served()
                if job.pause(0.1):
                    return

    return LegacyJob(session)


def my_job(url: DbUrl) -> LegacyJob:
    """The same on MySQL/MariaDB, named through the ``program_name`` attribute."""

    def session(job: LegacyJob) -> None:
        conn = pymysql.connect(**pymysql_kwargs(url), autocommit=True, program_name=PROGRAM)
        try:
            for _ in range(5):
                with conn.cursor() as cur:
                    cur.execute(MY_QUERY)
                    cur.fetchall()
                job.served()
                if job.pause(0.1):
                    return
        finally:
            conn.close()

    return LegacyJob(session)


def lambda_job(url: DbUrl) -> LegacyJob:
    """One query per connection, 20 a second: far shorter than a sample."""

    def session(job: LegacyJob) -> None:
        with psycopg.connect(**libpq_kwargs(url), autocommit=True) as conn:
            conn.execute(PG_QUERY).fetchall()
        job.served()
        job.pause(0.05)

    return LegacyJob(session)


def rotate_args(app: App | MyApp, store: SqliteStore, layout: Layout, *extra: str) -> list[str]:
    """``credflip rotate`` with the short drain of these tests."""
    short = ("--client-ttl", "300ms", "--quiet", "1s")
    return command("rotate", app, store, layout, "--yes", *short, *extra)


@pytest.fixture(scope="module")
def mariadb_named() -> Iterator[Mariadb]:
    """A private MariaDB with userstat (the counter) and performance_schema (the
    clients' program names: the machine's default has it off)."""
    server = PrivateMariadb("--userstat=ON", "--performance-schema=ON").start()
    try:
        password = server.add_admin(performance_schema=True)
        yield Mariadb(password, Path("/nonexistent/general.log"), port=server.port)
    finally:
        server.stop()


@pytest.fixture(params=[*(f"postgresql{v}" for v in PG_VERSIONS), "mysql"])
def named_app(request: pytest.FixtureRequest) -> App | MyApp:
    """PostgreSQL (each version) or a MariaDB that shows program names."""
    if request.param == "mysql":
        return make_my_app(request.getfixturevalue("mariadb_named"))
    return engine_app(request, request.param)


def test_the_drain_names_the_clients_that_do_not_follow(
    named_app: App | MyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = named_app
    postgres = isinstance(app, App)
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    address = f"{app.url.host}:{app.url.port}"
    name = f"127.0.0.1 ({PROGRAM}) on {app.database} via {address}"
    shown = "SELECT count(*) FROM billing.invoices WHERE total > $1"
    reports: list[LegacyReport] = []

    def collect(event: Event) -> None:
        if isinstance(event, DrainProgress):
            reports.append(event.legacy)

    job = pg_job(app.url) if postgres else my_job(app.url)
    with job:
        with pytest.raises(DrainTimeout) as info:
            rotate(
                sqlite_store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(client_ttl=0.3, quiet=1.0, drain_timeout=4),
                on_event=collect,
            )
        message = str(info.value)
        assert "\n" not in message and f"legacy clients: {name}" in message
        if postgres:
            assert f"running {shown!r} (" in message
        # Nothing was named during the cache wait; then the job, from its first sample on.
        assert not reports[0] and reports[-1].count == 1
        assert reports[-1].describe_first() == f"1 legacy client, first: {name}"

        # A second run continues the same drain: the CLI's progress line names it.
        resumed = cli(*rotate_args(app, sqlite_store, layout, "--drain-timeout", "4s"))
        assert resumed.code == 4, resumed.err
        progress = [
            line for line in resumed.err.splitlines() if line.startswith(f"[drain] {app.user}:")
        ]
        assert progress and all(f"— 1 legacy client, first: {name}" in p for p in progress)
        last = resumed.err.strip().splitlines()[-1]
        assert last.startswith("credflip: error: drain timed out") and name in last

        status = cli(*command("status", app, sqlite_store, layout, "--json"))
        text = cli(*command("status", app, sqlite_store, layout))
    assert job.errors == [] and connects(app.url)  # kept working all along
    drain = json.loads(status.out)["drain"]
    assert drain["legacy_count"] == 1
    (client,) = drain["legacy_clients"]
    assert (client["instance"], client["client"], client["application"], client["database"]) == (
        address,
        "127.0.0.1",
        PROGRAM,
        app.database,
    )
    assert client["sessions"] >= 1 and client["first_seen"] <= client["last_seen"]
    if app.engine == "postgresql":
        assert client["started"] is not None and client["started"] <= client["last_seen"]
    else:  # MySQL shows how long a thread is in its state, not since when it is connected
        assert client["started"] is None
    assert f"1 legacy client used the old user after the cache wait:\n  {name} (" in text.out
    if postgres:
        (top, *_rest) = client["statements"]
        assert top["query"] == shown and top["calls"] >= 5
        assert f" x {shown}" in text.out
    else:
        assert client["statements"] == []
    # The first run's record was continued, not started over.
    state = load_state(sqlite_store, layout)
    assert state.current is not None and len(state.current.legacy) == 1
    assert state.current.legacy[0]["f"] == pytest.approx(client["first_seen"])

    for output in (
        message,
        resumed.err,
        resumed.out,
        status.out,
        text.out,
        str(sqlite_store.get(layout.state)),  # the URLs hold it, the state must not
    ):
        assert app.password not in output
    # Once the job is gone, the rotation finishes.
    done = cli(*rotate_args(app, sqlite_store, layout))
    assert done.code == 0, done.err
    assert fresh(sqlite_store, layout).color is Color.GREEN


def test_a_client_between_two_samples_is_named_by_its_instance_and_statements(
    app: App, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """Connections far shorter than a sample: only pg_stat_statements sees them."""
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    job = lambda_job(app.url)
    reports: list[LegacyReport] = []
    with job, pytest.raises(DrainTimeout) as info:
        rotate(
            sqlite_store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.3, quiet=1.0, drain_timeout=3),
            on_event=lambda e: reports.append(e.legacy) if isinstance(e, DrainProgress) else None,
        )
    assert job.errors == []
    legacy = reports[-1]
    anonymous = [c for c in legacy.clients if c.anonymous]
    assert anonymous, legacy
    assert anonymous[0].instance == f"{app.url.host}:{app.url.port}"
    queries = {q for c in anonymous for q, _ in c.statements}
    assert "SELECT count(*) FROM billing.invoices WHERE total > $1" in queries
    assert "a client that connected and left between two samples" in str(info.value)
