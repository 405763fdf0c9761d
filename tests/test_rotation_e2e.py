"""The end-to-end suite: every engine (PostgreSQL, MariaDB) on every store (SQLite, SSM).

Real servers that enforce passwords; the same tests for both engines. What is
specific to one engine lives in test_rotation_postgres.py / test_engine_mysql.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from apps import App, MyApp
from helpers import (
    assert_pointer_connects,
    connects,
    fresh,
    login_error,
    rotate_process,
    stored_url,
    wait_until,
)

from credflip import commands
from credflip.demo import Traffic, resolve_and_insert
from credflip.errors import DrainTimeout, LockHeld, RotationError
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import Notice, RotateOptions, rollback, rotate
from credflip.state import LockInfo, Phase, load_state, read_lock
from credflip.stores.base import Store

TESTS = Path(__file__).parent
AnyApp = App | MyApp


@pytest.fixture
def app(any_app: AnyApp) -> AnyApp:
    return any_app


def opts(**kwargs: Any) -> RotateOptions:
    kwargs.setdefault("client_ttl", 0.2)
    kwargs.setdefault("quiet", kwargs["client_ttl"])
    kwargs.setdefault("drain_timeout", 30.0)
    return RotateOptions(**kwargs)


def initialise(app: AnyApp, store: Store, layout: Layout) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)


def test_rotate_there_and_back(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    state = load_state(store, layout)
    assert state.users == {Color.BLUE: app.user, Color.GREEN: app.green}
    blue = fresh(store, layout)
    assert blue.color is Color.BLUE
    app.execute(
        blue.writer_url,
        "INSERT INTO orders (color) VALUES ('blue')",
        "CREATE TABLE made_by_blue (id int)",
    )

    first = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert first.finished and first.to_color is Color.GREEN
    green = fresh(store, layout)
    assert green.color is Color.GREEN and green.user == app.green
    assert app.locked_marker in login_error(app.url)  # blue is locked, its password intact
    rows = app.execute(
        green.writer_url,
        "INSERT INTO orders (color) VALUES ('green')",
        # What blue created, green can change and drop.
        "ALTER TABLE made_by_blue ADD COLUMN note text",
        "DROP TABLE made_by_blue",
        "CREATE TABLE made_by_green (id int)",
        "SELECT count(*) FROM orders",
    )
    assert rows[0][0] == 2
    assert app.rights(app.user) == app.rights(app.green)
    green_password = stored_url(store, layout, Color.GREEN).password

    second = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert second.finished and second.to_color is Color.BLUE
    blue = fresh(store, layout)
    assert blue.user == app.user and connects(blue.writer_url)
    # The original password no longer works; green's is locked.
    assert app.wrong_password_marker in login_error(app.url)
    old_green = stored_url(store, layout, Color.GREEN).with_credentials(app.green, green_password)
    assert app.locked_marker in login_error(old_green)
    rows = app.execute(
        blue.writer_url,
        "INSERT INTO orders (color) VALUES ('blue')",
        "ALTER TABLE made_by_green ADD COLUMN note text",
        "DROP TABLE made_by_green",
        "SELECT count(*) FROM orders",
    )
    assert rows[0][0] == 3
    assert app.rights(app.user) == app.rights(app.green)
    assert [h.result for h in load_state(store, layout).history] == ["done", "done"]


def test_live_traffic_sees_no_failure(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=0.3)
    traffic = Traffic(resolve_and_insert(resolver, layout.env), workers=4, pause=0.005)
    # A client that never caches checks the invariant continuously.
    uncached = Resolver(store=store, prefix=layout.prefix, ttl=0)
    checker = Traffic(resolve_and_insert(uncached, layout.env), workers=1)
    traffic.start()
    checker.start()
    try:
        for n in range(3):
            # Each rotation starts once the traffic has served 40 more requests: how
            # much traffic meets the flips does not depend on the machine's speed.
            wait_until(lambda n=n: traffic.ok >= 40 * (n + 1), "traffic before a rotation", 60)
            assert rotate(
                store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.3)
            ).finished
        served = traffic.ok
        wait_until(lambda: traffic.ok >= served + 40, "traffic after the last rotation", 60)
    finally:
        traffic.stop()
        checker.stop()
    assert traffic.failed == 0, dict(traffic.errors)
    assert checker.failed == 0, dict(checker.errors)
    assert set(traffic.by_color) == {"blue", "green"}, traffic.by_color
    rows = app.execute(fresh(store, layout).writer_url, "SELECT count(*) FROM orders")
    assert rows[0][0] == traffic.ok + checker.ok


CRASH_POINTS = [("before", "prepare")] + [
    ("after", p) for p in ("prepare", "verify", "switch", "drain", "retire")
]


def crash(
    app: AnyApp, store: Store, layout: Layout, when: str, phase: str, retire: str = "lock"
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(TESTS / "crash_rotate.py"),
            store.url,
            layout.env,
            when,
            phase,
            retire,
        ],
        env={**os.environ, "CREDFLIP_ADMIN_URL": app.admin_url.secret},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 70, proc.stderr


@pytest.mark.parametrize(("when", "phase"), CRASH_POINTS)
def test_crash_at_phase_boundary_then_rotate_finishes(
    app: AnyApp, store: Store, layout: Layout, when: str, phase: str
) -> None:
    initialise(app, store, layout)
    crash(app, store, layout, when, phase)
    assert assert_pointer_connects(store, layout) in Color
    held = read_lock(store, layout)
    assert held is not None and held.is_stale_here()
    notices: list[str] = []
    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=opts(),
        on_event=lambda e: notices.append(e.message) if isinstance(e, Notice) else None,
    )
    assert result.finished and result.resumed
    assert any("stale lock" in n for n in notices)
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert app.locked_marker in login_error(app.url)
    state = load_state(store, layout)
    assert state.current is None and [h.result for h in state.history] == ["done"]
    assert read_lock(store, layout) is None


@pytest.mark.parametrize(("when", "phase"), CRASH_POINTS)
def test_crash_at_phase_boundary_then_rollback_restores_blue(
    app: AnyApp, store: Store, layout: Layout, when: str, phase: str
) -> None:
    initialise(app, store, layout)
    app.execute(app.url, "INSERT INTO orders (color) VALUES ('before')")
    crash(app, store, layout, when, phase)
    assert_pointer_connects(store, layout)
    result = rollback(store, layout, admin_url=app.admin_url)
    assert result.color is Color.BLUE
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert connects(app.url)  # blue kept its password all along
    state = load_state(store, layout)
    assert state.current is None and state.history[-1].result == "rolled_back"
    # And the next rotation works normally.
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert assert_pointer_connects(store, layout) is Color.GREEN


def test_rollback_refused_after_drop(plain_app: AnyApp, store: Store, layout: Layout) -> None:
    app = plain_app  # no views or routines: nothing keeps the old user from being dropped
    initialise(app, store, layout)
    crash(app, store, layout, "after", "retire", retire="drop")
    assert not app.user_exists(app.user)
    with pytest.raises(RotationError, match="was dropped"):
        rollback(store, layout, admin_url=app.admin_url)
    assert assert_pointer_connects(store, layout) is Color.GREEN
    # The interrupted rotation is finished first; the next one recreates the
    # dropped user with a fresh password.
    resumed = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert resumed.finished and resumed.resumed
    assert assert_pointer_connects(store, layout) is Color.GREEN
    new = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert new.finished and not new.resumed
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert fresh(store, layout).user == app.user


def test_rollback_after_a_finished_rotation(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    with pytest.raises(RotationError, match="nothing to roll back"):
        rollback(store, layout, admin_url=app.admin_url)
    rotate(store, layout, admin_url=app.admin_url, options=opts())
    result = rollback(store, layout, admin_url=app.admin_url)
    assert result.flipped and result.unlocked
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert connects(app.url)
    with pytest.raises(RotationError, match="already rolled back"):
        rollback(store, layout, admin_url=app.admin_url)


def test_two_rotations_at_once(app: AnyApp, store: Store, layout: Layout, cli: Any) -> None:
    initialise(app, store, layout)
    first = rotate_process(app, store, layout, "--client-ttl", "1500ms", "--quiet", "1500ms")
    try:
        assert first.stderr is not None
        for line in first.stderr:  # wait until the first one is draining
            if "[drain]" in line:
                break
        second = cli(
            "rotate",
            "--env",
            layout.env,
            "--store",
            store.url,
            "--admin-url",
            app.admin_url.secret,
            "--yes",
        )
        assert second.code == 3
        assert second.err.count("\n") == 1 and second.err.startswith("credflip: error:")
        assert f"pid {first.pid}" in second.err and "holds the lock" in second.err
    finally:
        _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert [h.result for h in load_state(store, layout).history] == ["done"]


def test_unlock_force_clears_a_stale_lock(
    app: AnyApp, store: Store, layout: Layout, cli: Any
) -> None:
    initialise(app, store, layout)
    foreign = LockInfo(owner="ops", host="other-host", pid=4242, started_at=1.0, token="t")
    store.put(layout.lock, foreign.to_json(), overwrite=False)
    args = ["--env", layout.env, "--store", store.url]
    blocked = cli("rotate", *args, "--admin-url", app.admin_url.secret, "--yes")
    assert blocked.code == 3 and "other-host" in blocked.err
    assert cli("unlock", *args).code == 2  # --force is required
    released = cli("unlock", *args, "--force")
    assert released.code == 0 and "other-host" in released.out
    done = cli(
        "rotate",
        *args,
        "--admin-url",
        app.admin_url.secret,
        "--client-ttl",
        "200ms",
        "--quiet",
        "200ms",
        "--yes",
    )
    assert done.code == 0, done.err


def test_drain_waits_for_an_open_session_and_times_out(
    app: AnyApp, store: Store, layout: Layout, cli: Any
) -> None:
    initialise(app, store, layout)
    holder = app.open(app.url)  # a client that never lets go of blue
    args = [
        "rotate",
        "--env",
        layout.env,
        "--store",
        store.url,
        "--admin-url",
        app.admin_url.secret,
        "--client-ttl",
        "200ms",
        "--quiet",
        "200ms",
        "--drain-timeout",
        "1s",
        "--yes",
    ]
    try:
        timed_out = cli(*args)
        assert timed_out.code == 4
        last = timed_out.err.strip().splitlines()[-1]
        assert last.startswith("credflip: error: drain timed out") and app.user in last
        assert "1 session" in last and "credflip status" in last and "keeps its login" in last
        assert read_lock(store, layout) is None
        state = load_state(store, layout)
        assert state.current is not None and state.current.phase is Phase.DRAIN
        assert fresh(store, layout).color is Color.GREEN
        assert connects(app.url)  # not retired: the straggler can still reconnect
        again = cli(*args)
        assert again.code == 4 and "resuming rotation" in again.err
    finally:
        holder.close()
    # Past its drain timeout a run stops once it sampled that long (or two windows); the
    # gaps between the samples that saw the session may have stretched the window past
    # that: a timeout that lets this run wait it.
    finished = cli(*args[:-2], "30s", "--yes")
    assert finished.code == 0, finished.err
    assert "(resumed)" in finished.err
    assert [h.result for h in load_state(store, layout).history] == ["done"]
    assert app.locked_marker in login_error(app.url)


def test_terminate_ends_old_sessions(app: AnyApp, store: Store, layout: Layout) -> None:
    """An idle pooled session of the old user is ended once it was idle for the whole
    window (MySQL counts idle time in whole seconds: the window starts after 1 s)."""
    initialise(app, store, layout)
    holder = app.open(app.url)
    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=opts(drain_timeout=10.0, terminate=True),
    )
    assert result.finished and result.terminated == 1
    with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
        holder.cursor().execute("SELECT 1")
    holder.close()
    assert app.locked_marker in login_error(app.url)


def test_drain_timeout_via_api_is_resumable(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    with app.open(app.url), pytest.raises(DrainTimeout):
        rotate(store, layout, admin_url=app.admin_url, options=opts(drain_timeout=0.5))
    result = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert result.finished and result.resumed


def test_rotate_refuses_while_inactive_user_in_use(
    app: AnyApp, store: Store, layout: Layout
) -> None:
    initialise(app, store, layout)
    rotate(store, layout, admin_url=app.admin_url, options=opts())
    rollback(store, layout, admin_url=app.admin_url)  # green stays usable after a rollback
    green = stored_url(store, layout, Color.GREEN)
    with app.open(green), pytest.raises(RotationError, match="still has 1 session"):
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert read_lock(store, layout) is None
    assert load_state(store, layout).current is None


def test_lock_is_exclusive_in_process(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    from credflip.state import hold_lock

    with hold_lock(store, layout, purpose="test"), pytest.raises(LockHeld, match="for test"):
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert read_lock(store, layout) is None


def test_state_document_stays_under_4kb(app: AnyApp, store: Store, layout: Layout) -> None:
    initialise(app, store, layout)
    for _ in range(3):
        rotate(store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.0))
    state = load_state(store, layout)
    state.history = state.history * 40
    text = state.to_json()
    assert len(text.encode()) <= 4096
    assert len(json.loads(text)["history"]) < 120
