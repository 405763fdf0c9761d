"""Replicas are instances too: a private streaming standby (PostgreSQL) and a private
MariaDB replica, each with sessions the primary cannot see."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from apps import App, make_app, make_my_app
from clusters import (
    PG_VERSIONS,
    Cluster,
    Mariadb,
    mariadb_pair,
    pg_id,
    replayed,
    start_cluster,
    streaming,
)
from faults import Invariant, Outages
from helpers import command, connects, login_error, on
from lagging import (
    adopt_reading_on,
    assert_resumes_verify_with_the_same_password,
    rotate_while_reading,
)
from servers import PrivateMariadb

from credflip import commands
from credflip.demo.cluster import EmbeddedPostgres
from credflip.errors import DrainTimeout, RotationError
from credflip.layout import Layout
from credflip.rotation import DrainProgress, Event, Notice, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

#: With :func:`delayed` the primary streams to two standbys and the test names
#: one: the other is accepted unwatched (tests/test_unwatched_replicas.py is
#: about that). Without it the primary streams to its one standby alone.
OTHER = ("127.0.0.1",)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    st = SqliteStore(tmp_path / "params.db")
    yield st
    st.close()


@pytest.fixture(scope="module", params=PG_VERSIONS, ids=pg_id)
def pg_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, EmbeddedPostgres]]:
    """A primary with pg_stat_statements and a hot standby of it, on each version."""
    cl = start_cluster(request.param)
    try:
        standby = cl.pg.standby()
        try:
            streaming(cl, 1)
            yield cl, standby
        finally:
            standby.stop()
    finally:
        cl.pg.stop()


@pytest.fixture
def delayed(pg_pair: tuple[Cluster, EmbeddedPostgres]) -> Iterator[EmbeddedPostgres]:
    """A second standby that applies every commit two seconds late, for one test.

    The primary is the module's: the standby is gone from it (its WAL sender too)
    before the next test, which may watch the first standby alone and must then
    find no other (in random order a module-wide one refused those tests' rotation).
    """
    cl = pg_pair[0]
    standby = cl.pg.standby(settings={"recovery_min_apply_delay": "2s"})
    try:
        streaming(cl, 2)
        yield standby
    finally:
        standby.stop()
        streaming(cl, 1)


def adopted(cl: Cluster, standby: EmbeddedPostgres, store: SqliteStore, layout: Layout) -> App:
    """A new app on *cl*, adopted with its reader URL on *standby* (once that replayed it)."""
    app = make_app(cl)
    replayed(cl, standby)
    adopt_reading_on(app, store, layout, standby.port)
    return app


def held_only_there(
    app: Any, store: SqliteStore, layout: Layout, cli: Any, url: DbUrl
) -> list[dict[str, Any]]:
    """Blue held open at *url* only: the drain waits (exit 4), then --terminate ends it.

    Returns the instances ``status --json`` showed while it was held.
    """
    holder = app.open(url)
    try:
        rotate_args = ["--client-ttl", "200ms", "--quiet", "200ms", "--yes", "--drain-timeout"]
        held = cli(*command("rotate", app, store, layout, *rotate_args, "2s"))
        assert held.code == 4, held.err
        last = held.err.strip().splitlines()[-1]
        assert f"1 session(s) on {url.host}:{url.port}" in last
        status = cli(*command("status", app, store, layout, "--json"))
        instances: list[dict[str, Any]] = json.loads(status.out)["drain"]["instances"]
        assert connects(url)  # not retired
        # That login is a use the next run sees (the counters changed since the last run):
        # it starts the window over, so this run is given time for a whole window.
        ended = cli(*command("rotate", app, store, layout, *rotate_args, "30s", "--terminate"))
        assert ended.code == 0, ended.err
        assert "terminated 1 session(s)" in ended.err
        with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
            holder.cursor().execute("SELECT 1")
    finally:
        holder.close()
    return instances


def test_a_session_held_only_on_the_standby_keeps_the_drain_waiting(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore, cli: Any
) -> None:
    cl, standby = pg_pair
    app = make_app(cl)
    replayed(cl, standby)
    reader = on(app.url, standby.port)
    layout = Layout("standby")
    init = cli(
        *command(
            "init",
            app,
            store,
            layout,
            "--writer-url",
            app.url.secret,
            "--reader-url",
            reader.secret,
        )
    )
    assert init.code == 0, init.err
    assert (
        f"127.0.0.1:{standby.port} (blue reader URL standby): pg_stat_activity, "
        f"pg_stat_statements" in init.out
    ), init.out
    instances = held_only_there(app, store, layout, cli, reader)
    assert [(i["role"], i["sessions"]["blue"]) for i in instances] == [
        ("primary", 0),
        ("standby", 1),
    ]
    # The lock reached the standby before its sessions were ended.
    assert app.locked_marker in login_error(reader)


def test_a_lagging_standby_is_waited_for_and_readers_never_fail(
    pg_pair: tuple[Cluster, EmbeddedPostgres], delayed: EmbeddedPostgres, store: SqliteStore
) -> None:
    layout = Layout("lagging")
    app = adopted(pg_pair[0], delayed, store, layout)
    options = RotateOptions(client_ttl=0.3, quiet=0.3, unwatched_ok=OTHER)
    results, events, traffic = rotate_while_reading(app, store, layout, options, times=2)
    for result in results:
        assert result.finished
        # Verify waited for the standby to replay the new password (2 s late).
        assert result.timings["verify"] >= 1.5
    assert traffic.failed == 0, dict(traffic.errors)
    assert set(traffic.by_color) == {"blue", "green"}
    assert any("waiting for standby" in e.message for e in events if isinstance(e, Notice))
    # The drain did not trust the standby's counters before it replayed the
    # change that makes the old user's logins count as its own.
    pending = [
        r.instance for e in events if isinstance(e, DrainProgress) for r in e.readings if r.pending
    ]
    assert f"127.0.0.1:{delayed.port}" in pending


def test_verify_timing_out_on_a_lagging_standby_resumes_with_the_same_password(
    pg_pair: tuple[Cluster, EmbeddedPostgres], delayed: EmbeddedPostgres, store: SqliteStore
) -> None:
    layout = Layout("verify-lag")
    app = adopted(pg_pair[0], delayed, store, layout)
    with pytest.raises(RotationError, match=r"bytes behind after 0\.3s"):
        rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(
                client_ttl=0.2, quiet=0.2, replica_lag_timeout=0.3, unwatched_ok=OTHER
            ),
        )
    options = RotateOptions(client_ttl=0.2, quiet=0.2, unwatched_ok=OTHER)
    assert_resumes_verify_with_the_same_password(app, store, layout, options)


def test_the_deadline_stops_verify_waiting_for_a_standby_resumably(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    """A Lambda's deadline comes while verify waits for a standby whose replay is
    paused: the run stops in verify at the deadline, long before
    --replica-lag-timeout, and the next run goes on with the same password."""
    cl, standby = pg_pair
    layout = Layout("verify-deadline")
    app = adopted(cl, standby, store, layout)
    url = standby.url("postgres", standby.superuser_password)
    notes: list[str] = []
    with psycopg.connect(
        host=url.host, port=url.port, user=url.user, password=url.password, autocommit=True
    ) as su:
        su.execute("SELECT pg_wal_replay_pause()")
        try:
            started = time.monotonic()
            paused = rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(
                    client_ttl=0.2,
                    quiet=0.2,
                    replica_lag_timeout=20,
                    deadline=started + 3,
                ),
                on_event=lambda e: notes.append(e.message) if isinstance(e, Notice) else None,
            )
            elapsed = time.monotonic() - started
        finally:
            su.execute("SELECT pg_wal_replay_resume()")
    assert not paused.finished and paused.stopped_in is Phase.VERIFY, notes
    # At the deadline (3 s), far from the 20-s --replica-lag-timeout: the upper bound is
    # generous for a busy machine and still tells the two apart.
    assert 2.5 < elapsed < 12, elapsed
    assert any("stopping in verify to respect the deadline" in n for n in notes), notes
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert_resumes_verify_with_the_same_password(app, store, layout, options)


def test_a_stopped_standby_makes_the_drain_refuse_to_retire(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    standby = pg_pair[1]
    layout = Layout("stopped")
    app = adopted(pg_pair[0], standby, store, layout)

    outages = Outages()

    def stop_standby(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is Phase.DRAIN:
            outages.begin(standby.port)
            standby.halt()

    # The reader URL is on the standby: while it is down the checker sees it away
    # (only it: the writer's logins must all get through), never a refused login.
    with Invariant(store, layout, outages) as checker:
        try:
            with pytest.raises(DrainTimeout) as caught:
                rotate(
                    store,
                    layout,
                    admin_url=app.admin_url,
                    options=RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=1.5),
                    on_event=stop_standby,
                )
            message = str(caught.value)
            assert f"127.0.0.1:{standby.port} unreachable" in message
            assert "--forget-instance" in message
            report = commands.status(store, layout, admin_url=app.admin_url)
            assert [i.reachable for i in report.instances] == [True, False]
            assert connects(app.url)  # blue was not retired
        finally:
            standby.resume()
            outages.end(standby.port)
        options = RotateOptions(client_ttl=0.2, quiet=0.2)
        result = rotate(store, layout, admin_url=app.admin_url, options=options)
    assert result.finished and result.resumed
    assert app.locked_marker in login_error(app.url)
    checker.assert_held()


@pytest.fixture(scope="module")
def my_pair() -> Iterator[tuple[Mariadb, PrivateMariadb, PrivateMariadb]]:
    """A private MariaDB primary and a replica of it, both with userstat on."""
    with mariadb_pair() as pair:
        yield pair


def test_a_session_held_only_on_the_mariadb_replica_keeps_the_drain_waiting(
    my_pair: tuple[Mariadb, PrivateMariadb, PrivateMariadb], store: SqliteStore, cli: Any
) -> None:
    mariadb, primary, replica = my_pair
    app = make_my_app(mariadb)
    replica.catch_up(primary)
    layout = Layout("replica")
    init = cli(
        *command(
            "init",
            app,
            store,
            layout,
            "--writer-url",
            app.url.secret,
            "--instance",
            f"127.0.0.1:{replica.port}",
        )
    )
    assert init.code == 0, init.err
    assert f"127.0.0.1:{replica.port} (--instance" in init.out
    instances = held_only_there(app, store, layout, cli, on(app.url, replica.port))
    assert [(i["source"], i["sessions"]["blue"]) for i in instances] == [
        ("admin URL", 0),
        ("--instance", 1),
    ]
    replica.catch_up(primary)
    assert app.locked_marker in login_error(on(app.url, replica.port))
