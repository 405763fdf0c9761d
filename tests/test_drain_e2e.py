"""The drain on real servers: legacy clients, counters, --min-drain, --require-counters.

A *legacy* client read its URL once (before the switch) and opens a fresh short
connection per request, the way a Lambda that resolved at cold start does. Its
connections last a few milliseconds, far less than the drain's 200 ms sample
interval, so only a cumulative per-user counter sees them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ENGINES, App, Cluster, Mariadb, MyApp, engine_app, make_app, make_my_app
from helpers import command, connects, dump, fresh, login_error
from servers import PrivateMariadb

from credflip import commands
from credflip.drain import Verdict
from credflip.errors import CredflipError
from credflip.layout import Color, Layout
from credflip.rotation import DrainProgress, Event, RotateOptions, rollback, rotate
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


def test_without_a_counter_it_warns_and_require_counters_refuses(
    counterless_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = counterless_app
    init = cli(
        "init",
        "--env",
        layout.env,
        "--store",
        sqlite_store.url,
        "--admin-url",
        app.admin_url.secret,
        "--writer-url",
        app.url.secret,
    )
    assert init.code == 0, init.err
    how = "CREATE EXTENSION pg_stat_statements" if app.engine == "postgresql" else "userstat = 1"
    assert "drain signals:" in init.out and how in init.out
    assert "no login counter for" in init.out

    before = (dump(sqlite_store), roles_state(app))
    refused = cli(*rotate_args(app, sqlite_store, layout, "--require-counters"))
    assert refused.code == 1
    assert refused.err.count("\n") == 1 and refused.err.startswith("credflip: error: --require")
    assert how in refused.err and "nothing was changed" in refused.err
    assert (dump(sqlite_store), roles_state(app)) == before

    warned = cli(
        *rotate_args(app, sqlite_store, layout, "--client-ttl", "200ms", "--quiet", "200ms")
    )
    assert warned.code == 0, warned.err
    warning = [line for line in warned.err.splitlines() if line.startswith("credflip: warning:")]
    assert len(warning) == 1 and "may be missed" in warning[0] and how in warning[0]

    status = cli(*command("status", app, sqlite_store, layout, "--json"))
    drain = json.loads(status.out)["drain"]
    assert [i["address"] for i in drain["instances"]] == [
        f"{app.admin_url.host}:{app.admin_url.port}"
    ]
    assert {s["name"]: s["available"] for s in drain["signals"] if s["cumulative"]}
    assert not any(s["available"] for s in drain["signals"] if s["cumulative"])
    assert drain["counter_gaps"]


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
                "--client-ttl",
                "200ms",
                "--quiet",
                "200ms",
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
        with pytest.raises(CredflipError, match="drain timed out"):
            rotate(sqlite_store, layout, admin_url=app.admin_url, options=pre)
        # Green's password did not change under the client.
        assert sqlite_store.get(layout.url(Color.GREEN, "writer")) == green_url.secret
    assert legacy.errors == [] and legacy.ok > 3
    state = load_state(sqlite_store, layout)
    assert state.current is not None and state.current.phase.value == "prepare"
    result = rotate(sqlite_store, layout, admin_url=app.admin_url, options=pre)
    assert result.finished and result.to_color is Color.GREEN
    assert fresh(sqlite_store, layout).color is Color.GREEN
