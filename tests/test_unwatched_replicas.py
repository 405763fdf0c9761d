"""No blind instance: a replica the primary streams to but no URL or ``--instance`` names
blocks the rotation (before anything changes) and the retire (a replica attached after the
switch), unless it is watched or ``--unwatched-ok`` accepts it.

Real servers: a private PostgreSQL primary with a hot standby (``pg_basebackup -R``) on
each version, and a private MariaDB primary with a replica. The drain is not what these
tests are about: short client TTL and quiet window.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import App, MyApp, make_app, make_my_app
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
from helpers import command, connects, dump, login_error, on
from servers import MY_ADMIN, PrivateMariadb

from credflip import commands
from credflip.aws_lambda import handler
from credflip.demo.cluster import EmbeddedPostgres
from credflip.errors import ConfigurationError, DrainBlocked, DrainTimeout
from credflip.layout import Color, Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    rollback,
    rotate,
)
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

FAST = {"client_ttl": 0.3, "quiet": 1.0}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    st = SqliteStore(tmp_path / "params.db")
    yield st
    st.close()


@pytest.fixture(scope="module", params=PG_VERSIONS, ids=pg_id)
def pg_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, EmbeddedPostgres]]:
    """A primary and a hot standby of it that no URL names."""
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


def managed(app: App | MyApp, store: SqliteStore, layout: Layout) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)


def test_a_standby_in_no_url_refuses_the_rotation_before_anything_changes(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore, cli: Any
) -> None:
    cl, _standby = pg_pair
    app = make_app(cl)
    layout = Layout("blindpg")
    managed(app, store, layout)
    before = dump(store)

    refused = cli(*command("rotate", app, store, layout, "--client-ttl", "300ms", "--yes"))
    assert refused.code == 1, refused.err
    assert refused.err.count("\n") == 1, refused.err  # one line
    assert refused.err.startswith("credflip: error: the drain would not see clients")
    assert (
        f"standby 127.0.0.1 of 127.0.0.1:{cl.pg.port}: add --instance 127.0.0.1:PORT (the port "
        f"it serves on), or --unwatched-ok 127.0.0.1; nothing was changed"
    ) in refused.err
    assert dump(store) == before
    assert load_state(store, layout).current is None
    assert connects(app.url)

    # The dry run fails the same way, and shows an accepted one.
    dry = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert dry.code == 1 and "nothing was changed" in dry.err, dry.err
    dry = cli(*command("rotate", app, store, layout, "--dry-run", "--unwatched-ok", "127.0.0.1"))
    assert dry.code == 0, dry.err
    assert f"not watching standby 127.0.0.1 of 127.0.0.1:{cl.pg.port} (--unwatched-ok)" in dry.out

    status = cli(*command("status", app, store, layout, "--json"))
    unwatched = json.loads(status.out)["drain"]["unwatched"]
    assert [u.split(":")[0] for u in unwatched] == ["standby 127.0.0.1 of 127.0.0.1"]
    text = cli(*command("status", app, store, layout))
    assert "blind spot of the drain (blocks the retire): standby 127.0.0.1" in text.out
    assert dump(store) == before


def test_with_the_standby_as_an_instance_the_rotation_finishes(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    cl, standby = pg_pair
    app = make_app(cl)
    layout = Layout("watchedpg")
    managed(app, store, layout)
    replayed(cl, standby)
    options = RotateOptions(**FAST, instances=(f"localhost:{standby.port}",))
    result = rotate(store, layout, admin_url=app.admin_url, options=options)
    assert result.finished
    replayed(cl, standby)
    assert app.locked_marker in login_error(on(app.url, standby.port))


def test_unwatched_ok_lets_the_rotation_finish_with_a_note(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    cl, _standby = pg_pair
    app = make_app(cl)
    layout = Layout("acceptedpg")
    managed(app, store, layout)
    notes: list[str] = []

    def record(event: Event) -> None:
        if isinstance(event, Notice):
            notes.append(event.message)

    options = RotateOptions(**FAST, unwatched_ok=("127.0.0.1",))
    result = rotate(store, layout, admin_url=app.admin_url, options=options, on_event=record)
    assert result.finished
    assert (
        f"not watching standby 127.0.0.1 of 127.0.0.1:{cl.pg.port} (--unwatched-ok): clients of "
        f"the old user there are not seen"
    ) in notes
    assert app.locked_marker in login_error(app.url)


class LambdaContext:
    """Just what the handler reads of AWS's context object: the time left."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


def test_the_scheduled_rotator_takes_unwatched_ok_from_its_event(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl, _standby = pg_pair
    app = make_app(cl)
    layout = Layout("blindlambda")
    managed(app, store, layout)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    event = {
        "env": layout.env,
        "store": store.url,
        "client_ttl": "300ms",
        "quiet": "1s",
        "margin": "1s",
    }
    with pytest.raises(ConfigurationError, match=r"standby 127\.0\.0\.1 of .*nothing was changed"):
        handler(event, LambdaContext(30))
    # As the template passes it: one string, hosts separated by commas.
    done = handler({**event, "unwatched_ok": "10.9.9.9, 127.0.0.1"}, LambdaContext(30))
    assert done["status"] == "done", done


def test_a_standby_attached_after_the_switch_blocks_the_retire_until_it_is_watched(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    cl, standby = pg_pair
    app = make_app(cl)
    layout = Layout("latepg")
    managed(app, store, layout)
    replayed(cl, standby)
    late: list[EmbeddedPostgres] = []

    def attach(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is Phase.DRAIN and not late:
            late.append(cl.pg.standby())
            streaming(cl, 2)

    watched = (f"127.0.0.1:{standby.port}",)
    try:
        with pytest.raises(DrainBlocked) as caught:
            rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(**FAST, instances=watched),
                on_event=attach,
            )
        assert isinstance(caught.value, DrainTimeout) and caught.value.exit_code == 4
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"not retiring {app.user!r}: ")
        assert f"standby 127.0.0.1 of 127.0.0.1:{cl.pg.port}: add --instance" in message
        # Not retired, and resumable from the drain.
        assert connects(app.url)
        state = load_state(store, layout)
        assert state.current is not None and state.current.phase is Phase.DRAIN
        (new,) = late
        result = rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(**FAST, instances=(f"127.0.0.1:{new.port}",)),
        )
        assert result.finished and result.resumed
        assert app.locked_marker in login_error(app.url)
        replayed(cl, new)
        assert app.locked_marker in login_error(on(app.url, new.port))
    finally:
        for extra in late:
            extra.stop()
        streaming(cl, 1)


def test_a_standby_attached_during_the_predrain_leaves_the_rotation_in_prepare(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    """After a rollback the next rotation drains green first; with --terminate, an idle
    session of green held for the whole window would be ended, but a standby attached
    meanwhile stops that. The pointer never moved: the rotation stays in prepare (not
    the drain, whose next run would refuse to go on), and the next run, watching the
    standby, drains green again and finishes."""
    cl, standby = pg_pair
    app = make_app(cl)
    layout = Layout("predrainpg")
    managed(app, store, layout)
    replayed(cl, standby)
    watched = (f"127.0.0.1:{standby.port}",)
    assert rotate(
        store, layout, admin_url=app.admin_url, options=RotateOptions(**FAST, instances=watched)
    ).finished
    assert rollback(store, layout, admin_url=app.admin_url).flipped
    green = store.get(layout.url(Color.GREEN, "writer"))
    assert green is not None
    late: list[EmbeddedPostgres] = []
    idle: list[Any] = []

    def attach(event: Event) -> None:
        if isinstance(event, DrainProgress) and not late:
            assert event.user == app.green  # the predrain
            idle.append(app.open(green))  # a client of green, idle from now on
            late.append(cl.pg.standby())
            streaming(cl, 2)

    try:
        with pytest.raises(DrainBlocked) as caught:
            rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(**FAST, instances=watched, terminate=True),
                on_event=attach,
            )
        state = load_state(store, layout)
        assert state.current is not None and state.current.phase is Phase.PREPARE
        assert not state.current.predrained
        message = str(caught.value)
        assert message.startswith(f"not preparing {app.green!r}: "), message
        assert f"standby 127.0.0.1 of 127.0.0.1:{cl.pg.port}: add --instance" in message
        assert store.get(layout.url(Color.GREEN, "writer")) == green
        assert connects(DbUrl.parse(green))  # nothing ended, nothing changed
        (new,) = late
        result = rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(**FAST, instances=(f"127.0.0.1:{new.port}",), terminate=True),
        )
        assert result.finished and result.resumed and result.to_color is Color.GREEN
        assert result.terminated >= 1  # the idle session of green, before its password changed
    finally:
        for conn in idle:
            conn.close()
        for extra in late:
            extra.stop()
        streaming(cl, 1)


def test_a_standby_hidden_from_the_admin_is_a_problem_with_the_grant(
    pg_pair: tuple[Cluster, EmbeddedPostgres], store: SqliteStore
) -> None:
    cl, standby = pg_pair
    app = make_app(cl)
    layout = Layout("hiddenpg")
    managed(app, store, layout)
    with cl.su() as conn:
        conn.execute("REVOKE pg_read_all_stats FROM credflip_admin")
    try:
        with pytest.raises(ConfigurationError) as caught:
            rotate(
                store,
                layout,
                admin_url=app.admin_url,
                # Without the grant the counters are hidden too: the replicas'
                # problem is what this test is about.
                options=RotateOptions(
                    **FAST, instances=(f"127.0.0.1:{standby.port}",), sessions_only=True
                ),
            )
    finally:
        with cl.su() as conn:
            conn.execute("GRANT pg_read_all_stats TO credflip_admin")
    message = str(caught.value)
    assert f"cannot list the replicas of 127.0.0.1:{cl.pg.port}" in message
    assert "GRANT pg_read_all_stats TO credflip_admin" in message
    assert message.endswith("nothing was changed")


# -- MariaDB ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def my_pair() -> Iterator[tuple[Mariadb, PrivateMariadb, PrivateMariadb]]:
    """A private MariaDB primary and a replica of it that no URL names."""
    with mariadb_pair() as pair:
        yield pair


def test_a_mariadb_replica_in_no_url_refuses_the_rotation(
    my_pair: tuple[Mariadb, PrivateMariadb, PrivateMariadb], store: SqliteStore, cli: Any
) -> None:
    mariadb, primary, replica = my_pair
    app = make_my_app(mariadb)
    layout = Layout("blindmy")
    managed(app, store, layout)
    before = dump(store)
    rotate_args = ("--client-ttl", "300ms", "--quiet", "1s", "--yes")

    # The admin sees the replica's binlog dump thread (PROCESS), not its port.
    refused = cli(*command("rotate", app, store, layout, *rotate_args))
    assert refused.code == 1, refused.err
    assert (
        f"replica 127.0.0.1 of 127.0.0.1:{primary.port}: add --instance 127.0.0.1:PORT"
    ) in refused.err
    assert refused.err.rstrip().endswith("nothing was changed")
    # With the right to read the replicas' registrations, the exact --instance
    # (taken back after, for the tests that share this server).
    right = f"REPLICATION MASTER ADMIN ON *.* {{}} '{MY_ADMIN}'@'%'"
    primary.sql("GRANT " + right.format("TO"))
    try:
        refused = cli(*command("rotate", app, store, layout, *rotate_args))
    finally:
        primary.sql("REVOKE " + right.format("FROM"))
    assert refused.code == 1, refused.err
    assert (
        f"replica 127.0.0.1:{replica.port} of 127.0.0.1:{primary.port}: add --instance "
        f"127.0.0.1:{replica.port}, or --unwatched-ok 127.0.0.1; nothing was changed"
    ) in refused.err
    assert dump(store) == before
    assert connects(app.url)


def test_with_the_mariadb_replica_as_an_instance_the_rotation_finishes(
    my_pair: tuple[Mariadb, PrivateMariadb, PrivateMariadb], store: SqliteStore
) -> None:
    mariadb, primary, replica = my_pair
    app = make_my_app(mariadb)
    layout = Layout("watchedmy")
    managed(app, store, layout)
    replica.catch_up(primary)
    options = RotateOptions(**FAST, instances=(f"127.0.0.1:{replica.port}",))
    result = rotate(store, layout, admin_url=app.admin_url, options=options)
    assert result.finished
    replica.catch_up(primary)
    assert app.locked_marker in login_error(on(app.url, replica.port))
