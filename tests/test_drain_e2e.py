"""The drain on real servers: legacy clients, resuming from the kept evidence, a late
login of the old user, --min-drain, and the predrain after a rollback (the counters and
--sessions-only are test_drain_counters.py's).

A *legacy* client read its URL once (before the switch) and opens a fresh short
connection per request, the way a Lambda that resolved at cold start does. Its
connections last a few milliseconds, far less than the drain's 200 ms sample
interval, so only a cumulative per-user counter sees them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from apps import AnyApp, App
from helpers import FAST, command, connects, fresh, login_error, rotate_args
from legacy_clients import Legacy

from credflip import commands
from credflip.drain import Verdict
from credflip.errors import CredflipError
from credflip.layout import Color, Layout
from credflip.rotation import DrainProgress, Event, RotateOptions, rollback, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

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
