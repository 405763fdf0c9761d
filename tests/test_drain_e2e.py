"""The drain on real servers: legacy clients, counters, --min-drain, --sessions-only.

A *legacy* client read its URL once (before the switch) and opens a fresh short
connection per request, the way a Lambda that resolved at cold start does. Its
connections last a few milliseconds, far less than the drain's 200 ms sample
interval, so only a cumulative per-user counter sees them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import ENGINES, App, MyApp, engine_app, make_app, make_my_app, my_hash
from clusters import PG_VERSIONS, Cluster, Mariadb, start_cluster
from helpers import command, connects, dump, fresh, login_error
from servers import PrivateMariadb

from credflip import commands
from credflip.drain import Verdict
from credflip.errors import CredflipError
from credflip.layout import Color, Layout
from credflip.rotation import DrainProgress, Event, RotateOptions, new_password, rollback, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

AnyApp = App | MyApp


class Legacy:
    """A client that keeps using one URL, one short connection per request."""

    def __init__(self, app: AnyApp, url: DbUrl, period: float) -> None:
        self.app, self.url, self.period = app, url, period
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.app.execute(self.url, "SELECT 1")
                self.ok += 1
                self._first.set()
            except Exception as exc:
                self.errors.append(str(exc).splitlines()[0])
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def __enter__(self) -> Legacy:
        self._thread.start()
        assert self._first.wait(30), self.errors[:3]
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "params.db")
    yield store
    store.close()


#: Short waits, where the drain's length is not what a test is about.
FAST = ("--client-ttl", "200ms", "--quiet", "200ms")


def rotate_args(app: AnyApp, store: SqliteStore, layout: Layout, *extra: str) -> list[str]:
    return command("rotate", app, store, layout, "--yes", *extra)


# Periodic legacy clients, with nothing but --client-ttl 1s: the default quiet
# window (40 TTLs) covers every one of them, seen before or not. The drain
# timeout only bounds the test: the run must end with exit 4, the user kept.
LEGACY_PERIODS = [
    pytest.param(0.5, id="every-0.5s"),
    pytest.param(1.5, id="every-1.5s"),
    pytest.param(5.0, id="every-5s"),
]


@pytest.mark.parametrize("period", LEGACY_PERIODS)
def test_by_default_a_periodic_legacy_client_is_never_retired_under(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any, period: float
) -> None:
    app = any_app
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    timeout = 2 * period + 2.0
    args = rotate_args(app, sqlite_store, layout, "--client-ttl", "1s")
    with Legacy(app, app.url, period) as legacy:
        held = cli(*args, "--drain-timeout", f"{timeout}s")
        assert held.code == 4, held.err
        last = held.err.strip().splitlines()[-1]
        assert last.startswith("credflip: error: drain timed out") and app.user in last
        assert "credflip: warning" not in held.err  # a counter is there
        assert connects(app.url)  # not retired: the legacy client still logs in
    assert legacy.errors == []
    assert legacy.ok >= timeout / period - 1  # it kept working all along
    assert fresh(sqlite_store, layout).color is Color.GREEN
    assert load_state(sqlite_store, layout).current is not None


def test_a_later_run_continues_the_drain_from_the_kept_evidence(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """Past the timeout a run stops at the first use it sees (exit 4); once the
    legacy client is gone, the next run finishes: its first sample compares the
    counters with the ones the earlier run kept, no blind start."""
    app = any_app
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    args = rotate_args(app, sqlite_store, layout, "--client-ttl", "300ms", "--quiet", "3s")
    with Legacy(app, app.url, 0.3) as legacy:
        held = cli(*args, "--drain-timeout", "2s")
        assert held.code == 4, held.err
        again = cli(*args, "--drain-timeout", "2s")
        assert again.code == 4, again.err  # still there: stops at once, keeps blue
        assert connects(app.url)
    assert legacy.errors == []
    evidence = load_state(sqlite_store, layout).current
    assert evidence is not None and evidence.evidence["i"]
    progress: list[Verdict] = []
    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.3, quiet=3.0, drain_timeout=2.0),
        on_event=lambda e: (
            progress.append(e.status.verdict) if isinstance(e, DrainProgress) else None
        ),
    )
    assert result.finished and result.resumed
    # The first sample had a baseline from the earlier run: it was never "unknown".
    assert progress[0] in (Verdict.IN_USE, Verdict.QUIET)
    assert app.locked_marker in login_error(app.url)


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
    result = cli(
        "init",
        "--env",
        layout.env,
        "--store",
        store.url,
        "--admin-url",
        app.admin_url.secret,
        "--writer-url",
        app.url.secret,
        *extra,
    )
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


def test_a_late_login_of_the_old_user_runs_as_itself_and_its_objects_go_to_the_group(
    app: App, sqlite_store: SqliteStore, layout: Layout
) -> None:
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    seen: list[Any] = []

    def straggle(event: Event) -> None:
        if isinstance(event, DrainProgress) and not seen:
            # A client that still has blue's URL logs in during the drain.
            with app.connect(app.url) as conn:
                seen.append(conn.execute("SELECT current_user, session_user").fetchone())
                conn.execute("INSERT INTO orders (color) VALUES ('late blue')")
                conn.execute("CREATE TABLE made_late (id int)")

    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.3, quiet=0.3),
        on_event=straggle,
    )
    assert result.finished
    # It ran as itself, so pg_stat_statements counted it as blue, with blue's rights.
    assert seen == [(app.user, app.user)]
    with app.su() as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'made_late'"
        ).fetchone()
        assert owner == (app.group,)
        settings = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = %s::regrole "
            "AND s.setdatabase = 0",
            (app.user,),
        ).fetchone()
        assert settings is not None and f"role={app.group}" in settings[0]
    # The next rotation brings blue back with everything in place.
    assert rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.2),
    ).finished
    with app.connect(fresh(sqlite_store, layout).writer_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app.group,)
        conn.execute("DROP TABLE made_late")


def test_min_drain_is_a_floor_and_status_shows_the_earliest_retire(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = any_app
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    verdicts: list[Verdict] = []
    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.2, min_drain=2.0),
        on_event=lambda e: (
            verdicts.append(e.status.verdict) if isinstance(e, DrainProgress) else None
        ),
    )
    assert result.finished and result.drain_seconds is not None
    assert result.drain_seconds >= 2.0
    assert Verdict.QUIET in verdicts

    holder = app.open(fresh(sqlite_store, layout).writer_url)  # green stays in use
    try:
        held = cli(
            *rotate_args(
                app,
                sqlite_store,
                layout,
                *FAST,
                "--min-drain",
                "30m",
                "--drain-timeout",
                "500ms",
            )
        )
        assert held.code == 4, held.err
    finally:
        holder.close()
    status = cli(*command("status", app, sqlite_store, layout, "--json"))
    report = json.loads(status.out)
    switched = report["rotation"]["switched_at"]
    assert report["rotation"]["min_drain"] == 1800.0
    assert report["drain"]["earliest_retire"] == pytest.approx(switched + 1800.0, abs=0.01)
    text = cli(*command("status", app, sqlite_store, layout))
    assert "retired at the earliest at" in text.out
    # A resume cannot weaken it.
    resumed: list[str] = []
    with pytest.raises(CredflipError, match="drain timed out"):
        rotate(
            sqlite_store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=0.3),
            on_event=lambda e: resumed.append(getattr(e, "message", "")),
        )
    assert any("--min-drain 30m00s recorded" in m for m in resumed)
    assert load_state(sqlite_store, layout).current.min_drain == 1800.0  # type: ignore[union-attr]


def test_after_a_rollback_the_rolled_back_color_is_drained_before_its_password_changes(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """Clients moved to green during a rotation that was rolled back; one of them never
    follows the pointer and keeps green's URL. The next rotation prepares green again:
    it must first see green unused (counters included, not only open sessions)."""
    app = any_app
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert rotate(sqlite_store, layout, admin_url=app.admin_url, options=options).finished
    rollback(sqlite_store, layout, admin_url=app.admin_url)
    green = fresh(sqlite_store, layout)
    assert green.color is Color.BLUE
    green_url = DbUrl.parse(
        sqlite_store.get(layout.url(Color.GREEN, "writer")) or "", what="green writer URL"
    )
    pre = RotateOptions(client_ttl=0.2, quiet=1.0, drain_timeout=2.0)
    with Legacy(app, green_url, 0.3) as legacy:
        # Refused at once when a sample catches its session open; drained otherwise.
        with pytest.raises(CredflipError, match=r"drain timed out|still has 1 session"):
            rotate(sqlite_store, layout, admin_url=app.admin_url, options=pre)
        # Green's password did not change under the client.
        assert sqlite_store.get(layout.url(Color.GREEN, "writer")) == green_url.secret
    assert legacy.errors == [] and legacy.ok > 3
    state = load_state(sqlite_store, layout)
    assert state.current is not None and state.current.phase.value == "prepare"
    result = rotate(sqlite_store, layout, admin_url=app.admin_url, options=pre)
    assert result.finished and result.to_color is Color.GREEN
    assert fresh(sqlite_store, layout).color is Color.GREEN
