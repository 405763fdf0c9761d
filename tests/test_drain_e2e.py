"""The drain on real servers: legacy clients, resuming from the kept evidence, a late
login of the old user, --min-drain, and the predrain after a rollback (the counters and
--sessions-only are test_drain_counters.py's).

A *legacy* client read its URL once (before the switch) and opens a fresh short
connection per request, the way a Lambda that resolved at cold start does. Its
connections last a few milliseconds, far less than the drain's 200 ms sample
interval, so only a cumulative per-user counter sees them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

import pytest
from apps import AnyApp, App
from helpers import FAST, command, connects, fresh, login_error, rotate_args
from legacy_clients import Legacy

from credflip import commands
from credflip.drain import Verdict
from credflip.errors import CredflipError
from credflip.layout import Color, Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    RotationResult,
    rollback,
    rotate,
)
from credflip.state import Phase, load_state
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
    # Past its drain timeout a run stops once it sampled that long (or two windows); the
    # client's pauses stretched the window beyond: a timeout that lets this run wait it.
    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.3, quiet=3.0, drain_timeout=120.0),
        on_event=lambda e: (
            progress.append(e.status.verdict) if isinstance(e, DrainProgress) else None
        ),
    )
    assert result.finished and result.resumed
    # The first sample had a baseline from the earlier run: it was never "unknown".
    assert progress[0] in (Verdict.IN_USE, Verdict.QUIET)
    assert app.locked_marker in login_error(app.url)


def test_a_login_right_before_the_retire_sends_the_rotation_back_to_the_drain(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """After the drain's last sample, the retire writes the phase, checks the pointer and
    the replicas and plans its statements. A legacy client that logs in meanwhile (here:
    as the retire starts) is seen by the retire's last look: the old user is not locked
    under it, the run drains again and retires once it is gone."""
    app = any_app
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    events: list[Event] = []
    late: list[bool] = []

    def straggle(event: Event) -> None:
        events.append(event)
        if isinstance(event, PhaseStarted) and event.phase is Phase.RETIRE and not late:
            late.append(connects(app.url))  # blue's URL, one short login and query

    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.3),
        on_event=straggle,
    )
    assert result.finished and late == [True]
    phases = [e.phase for e in events if isinstance(e, PhaseStarted)]
    assert phases[-5:] == [Phase.DRAIN, Phase.RETIRE, Phase.DRAIN, Phase.RETIRE, Phase.DONE]
    warned = [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert any(w.startswith(f"not retiring '{app.user}': one last reading") for w in warned)
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
    # The client's pauses stretched the window past what a run waits after its drain
    # timeout (that or two windows): a timeout that lets this run wait it.
    later = dataclasses.replace(pre, drain_timeout=120.0)
    result = rotate(sqlite_store, layout, admin_url=app.admin_url, options=later)
    assert result.finished and result.to_color is Color.GREEN
    assert fresh(sqlite_store, layout).color is Color.GREEN


def rolled_back(app: AnyApp, store: SqliteStore, layout: Layout) -> str | None:
    """Rotate to green and roll back after the switch: green's URL, as its clients keep it."""
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert rotate(store, layout, admin_url=app.admin_url, options=options).finished
    assert rollback(store, layout, admin_url=app.admin_url).flipped
    return store.get(layout.url(Color.GREEN, "writer"))


def paused_in_the_predrain(app: AnyApp, store: SqliteStore, layout: Layout) -> RotationResult:
    """A rotate that stops at its deadline in the predrain: the window is far longer."""
    notes: list[str] = []
    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=60.0, deadline=time.monotonic() + 8.0),
        on_event=lambda e: notes.append(e.message) if isinstance(e, Notice) else None,
    )
    assert not result.finished and result.stopped_in is Phase.PREPARE
    assert any(f"{app.green!r}" in n and "rolled back" in n for n in notes), notes
    return result


def test_a_rollback_of_a_rotation_paused_in_the_predrain_keeps_the_predrain_due(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """The operator abandons a rotation that was still draining the rolled-back color: the
    pointer never moved, but green's clients from before the first rollback may still be
    there. The next rotation drains green again before it changes green's password."""
    app = any_app
    green = rolled_back(app, sqlite_store, layout)
    paused_in_the_predrain(app, sqlite_store, layout)
    assert sqlite_store.get(layout.url(Color.GREEN, "writer")) == green
    abandoned = rollback(sqlite_store, layout, admin_url=app.admin_url)
    assert not abandoned.flipped
    assert load_state(sqlite_store, layout).current is None
    # Again: drains green first (and stops at the deadline), green's password unchanged.
    paused_in_the_predrain(app, sqlite_store, layout)
    assert sqlite_store.get(layout.url(Color.GREEN, "writer")) == green
    assert connects(DbUrl.parse(green or "", what="green"))


def test_the_predrain_counts_from_the_rollback_on_the_primarys_clock(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback ran on a machine whose clock is an hour ahead of the primary's: the
    next rotation (here, on the primary's time) drains green from the rollback as the
    primary saw it, not from an hour from now, as the drain reads every kept instant."""
    app = any_app
    machine = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: machine() + 3600.0)
        rolled_back(app, sqlite_store, layout)
    last = load_state(sqlite_store, layout).last
    progress: list[str] = []
    result = rotate(
        sqlite_store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.3, deadline=time.monotonic() + 30.0),
        on_event=lambda e: progress.append(e.user) if isinstance(e, DrainProgress) else None,
    )
    assert result.finished and result.to_color is Color.GREEN
    assert progress[0] == app.green  # drained first
    assert last is not None and last.predrain_since is not None
    assert abs(last.predrain_since - machine()) < 30  # the servers run here


def test_status_names_the_legacy_clients_of_the_color_being_predrained(
    any_app: AnyApp, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """A client keeps green's URL after the rollback: the predrain names it as it names
    the drain's, in the state, so that status says who still uses green."""
    app = any_app
    green = DbUrl.parse(rolled_back(app, sqlite_store, layout) or "", what="green writer URL")
    legacy = Legacy(app, green, 0.3)

    def start(event: Event) -> None:
        # Once the rotation passed its checks: a session caught open there refuses at once.
        if isinstance(event, DrainProgress) and not legacy.ok:
            legacy.__enter__()

    try:
        with pytest.raises(CredflipError, match=f"drain timed out.*{app.green}"):
            rotate(
                sqlite_store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(
                    client_ttl=0.2, quiet=60.0, drain_timeout=1.0, deadline=time.monotonic() + 8
                ),
                on_event=start,
            )
    finally:
        legacy.__exit__()
    assert legacy.errors == [] and legacy.ok > 3
    current = load_state(sqlite_store, layout).current
    assert current is not None and current.legacy
    report = json.loads(cli(*command("status", app, sqlite_store, layout, "--json")).out)
    assert report["drain"]["legacy_count"] >= 1
    assert report["drain"]["legacy_user"] == app.green and current.predraining
    text = cli(*command("status", app, sqlite_store, layout)).out
    assert f"draining {app.green!r} (green) before its password changes" in text
    assert re.search(rf"legacy clients? used {app.green!r} \(green\) after the cache wait:", text)
