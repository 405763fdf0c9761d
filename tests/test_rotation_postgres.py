"""End-to-end rotations on a real PostgreSQL that enforces passwords."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import App
from helpers import (
    assert_pointer_connects,
    connects,
    fresh,
    login_error,
    privileges,
    stored_url,
)

from credflip import commands
from credflip.demo import Traffic, resolve_and_insert
from credflip.errors import DrainTimeout, LockHeld, RotationError
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import Event, Notice, RotateOptions, rollback, rotate
from credflip.state import LockInfo, Phase, load_state, read_lock
from credflip.stores.sqlite import SqliteStore

TESTS = Path(__file__).parent


def opts(**kwargs: Any) -> RotateOptions:
    kwargs.setdefault("client_ttl", 0.2)
    kwargs.setdefault("drain_timeout", 30.0)
    return RotateOptions(**kwargs)


def initialise(app: App, store: SqliteStore, layout: Layout) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)


def owners(app: App) -> set[str]:
    with app.su() as conn:
        rows = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'billing') "
            "UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'billing' "
            "UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'billing'"
        ).fetchall()
    return {r[0] for r in rows}


def test_adopt_then_rotate_there_and_back(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    assert owners(app) == {app.group}
    state = load_state(store, layout)
    assert state.users == {Color.BLUE: app.user, Color.GREEN: app.green}
    assert fresh(store, layout).color is Color.BLUE

    written = 0
    with psycopg.connect(fresh(store, layout).writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('blue')")
        conn.execute("CREATE TABLE made_by_blue (id int)")
        written += 1

    first = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert first.finished and first.to_color is Color.GREEN
    green = fresh(store, layout)
    assert green.color is Color.GREEN and green.user == app.green
    assert "not permitted to log in" in login_error(app.url)  # blue is locked
    with psycopg.connect(green.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('green')")
        written += 1
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (written,)
        # Objects blue created belong to the group: green can change and drop them.
        conn.execute("ALTER TABLE made_by_blue ADD COLUMN note text")
        conn.execute("DROP TABLE made_by_blue")
        conn.execute("ALTER TABLE billing.invoices ADD COLUMN paid bool")
        conn.execute("DROP VIEW billing.big")
        conn.execute("CREATE VIEW billing.big AS SELECT id, total FROM billing.invoices")
        conn.execute("CREATE TABLE made_by_green (id int)")
        assert conn.execute("SELECT billing.add(2, 3)").fetchone() == (5,)
        assert conn.execute("SELECT nextval('billing.numbers')").fetchone() == (1,)
        assert conn.execute("SELECT current_user").fetchone() == (app.group,)
    with app.su() as conn:
        assert privileges(conn, app.user) == privileges(conn, app.green)
    green_password = stored_url(store, layout, Color.GREEN).password

    second = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert second.finished and second.to_color is Color.BLUE
    blue = fresh(store, layout)
    assert blue.color is Color.BLUE and blue.user == app.user
    # The original password no longer works; the rotated one does.
    assert "password authentication failed" in login_error(app.url)
    assert "not permitted to log in" in login_error(
        stored_url(store, layout, Color.GREEN).with_credentials(app.green, green_password)
    )
    with psycopg.connect(blue.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('blue')")
        written += 1
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (written,)
        conn.execute("ALTER TABLE made_by_green ADD COLUMN note text")
        conn.execute("DROP TABLE made_by_green")
        assert conn.execute("SELECT count(*) FROM billing.big").fetchone() == (2,)
    with app.su() as conn:
        assert privileges(conn, app.user) == privileges(conn, app.green)
    assert [h.result for h in load_state(store, layout).history] == ["done", "done"]


def test_rights_match_table_by_table_right_after_prepare(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    with app.su() as conn:
        # Direct grants, settings and memberships of the app user, the kinds
        # of things a real database accumulates.
        conn.execute("CREATE TABLE audit (id int, secret text, public_note text)")
        conn.execute(f"GRANT SELECT ON audit TO {app.user}")
        conn.execute(f"GRANT UPDATE (public_note) ON audit TO {app.user}")
        conn.execute(f"GRANT pg_read_all_settings TO {app.user}")
        conn.execute(f"ALTER ROLE {app.user} SET statement_timeout = '7s'")
        conn.execute(f'ALTER ROLE {app.user} SET search_path = billing, "$user", public')
        conn.execute(f"ALTER ROLE {app.user} IN DATABASE {app.database} SET work_mem = '8MB'")

    seen: list[dict[str, Any]] = []

    def capture(event: Event) -> None:
        from credflip.rotation import PhaseFinished

        if isinstance(event, PhaseFinished) and event.phase is Phase.PREPARE:
            with app.su() as conn:
                seen.append(
                    {"blue": privileges(conn, app.user), "green": privileges(conn, app.green)}
                )

    # The table belongs to someone else: the admin cannot pass on its rights.
    # The rotation must stop in prepare with the pointer untouched.
    from credflip.errors import InsufficientPrivilege

    with pytest.raises(InsufficientPrivilege, match="WITH GRANT OPTION to give"):
        rotate(store, layout, admin_url=app.admin_url, options=opts(), on_event=capture)
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert load_state(store, layout).current.phase is Phase.PREPARE  # type: ignore[union-attr]
    with app.su() as conn:
        conn.execute(
            "GRANT SELECT, UPDATE (public_note) ON audit TO credflip_admin WITH GRANT OPTION"
        )
    seen.clear()
    assert rotate(store, layout, admin_url=app.admin_url, options=opts(), on_event=capture).resumed
    assert seen and seen[0]["blue"] == seen[0]["green"]
    assert seen[0]["green"]["rel public.audit"][0] is True  # SELECT came along

    def settings(role: str) -> set[tuple[str, str]]:
        with app.su() as conn:
            rows = conn.execute(
                "SELECT coalesce(d.datname, ''), unnest(s.setconfig) FROM pg_db_role_setting s "
                "LEFT JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE s.setrole = %s::regrole",
                (role,),
            ).fetchall()
        return {(str(a), str(b)) for a, b in rows}

    assert settings(app.green) == settings(app.user)
    assert ("", 'search_path=billing, "$user", public') in settings(app.green)
    assert (app.database, "work_mem=8MB") in settings(app.green)
    with psycopg.connect(fresh(store, layout).writer_url, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('billing, "$user", public',)
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (2,)  # via search_path
        conn.execute("UPDATE audit SET public_note = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit SET secret = 'x'")


def test_live_traffic_sees_no_failure(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=0.3)
    traffic = Traffic(resolve_and_insert(resolver, layout.env), workers=4, pause=0.005)
    # A client that never caches checks the invariant continuously.
    uncached = Resolver(store=store, prefix=layout.prefix, ttl=0)
    checker = Traffic(resolve_and_insert(uncached, layout.env), workers=1)
    traffic.start()
    checker.start()
    try:
        for _ in range(3):
            assert rotate(
                store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.3)
            ).finished
    finally:
        traffic.stop()
        checker.stop()
    assert traffic.failed == 0, dict(traffic.errors)
    assert checker.failed == 0, dict(checker.errors)
    assert traffic.ok > 100 and set(traffic.by_color) == {"blue", "green"}
    with app.su() as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (traffic.ok + checker.ok,)


CRASH_POINTS = [("before", "prepare")] + [
    ("after", p) for p in ("prepare", "verify", "switch", "drain", "retire")
]


def crash(
    app: App, store: SqliteStore, layout: Layout, when: str, phase: str, retire: str = "lock"
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
    app: App, store: SqliteStore, layout: Layout, when: str, phase: str
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
    assert "not permitted to log in" in login_error(app.url)
    state = load_state(store, layout)
    assert state.current is None and [h.result for h in state.history] == ["done"]
    assert read_lock(store, layout) is None


@pytest.mark.parametrize(("when", "phase"), CRASH_POINTS)
def test_crash_at_phase_boundary_then_rollback_restores_blue(
    app: App, store: SqliteStore, layout: Layout, when: str, phase: str
) -> None:
    initialise(app, store, layout)
    with app.connect(app.url) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('before')")
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


def test_rollback_refused_after_drop(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    crash(app, store, layout, "after", "retire", retire="drop")
    with app.su() as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app.user,)).fetchone()
            is None
        )
    with pytest.raises(RotationError, match="was dropped"):
        rollback(store, layout, admin_url=app.admin_url)
    assert assert_pointer_connects(store, layout) is Color.GREEN
    # The interrupted rotation is finished first; the next one recreates the
    # dropped user with a fresh password.
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).resumed
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert not rotate(store, layout, admin_url=app.admin_url, options=opts()).resumed
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert fresh(store, layout).user == app.user


def test_rollback_after_a_finished_rotation(app: App, store: SqliteStore, layout: Layout) -> None:
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


def test_two_rotations_at_once(app: App, store: SqliteStore, layout: Layout, cli: Any) -> None:
    initialise(app, store, layout)
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "credflip",
            "rotate",
            "--env",
            layout.env,
            "--store",
            store.url,
            "--client-ttl",
            "1500ms",
            "--yes",
        ],
        env={**os.environ, "CREDFLIP_ADMIN_URL": app.admin_url.secret},
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
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
    app: App, store: SqliteStore, layout: Layout, cli: Any
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
        "rotate", *args, "--admin-url", app.admin_url.secret, "--client-ttl", "200ms", "--yes"
    )
    assert done.code == 0, done.err


def test_drain_waits_for_an_open_session_and_times_out(
    app: App, store: SqliteStore, layout: Layout, cli: Any
) -> None:
    initialise(app, store, layout)
    holder = app.connect(app.url)  # a client that never lets go of blue
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
        "--drain-timeout",
        "1s",
        "--yes",
    ]
    try:
        timed_out = cli(*args)
        assert timed_out.code == 4
        last = timed_out.err.strip().splitlines()[-1]
        assert last.startswith("credflip: error: drain timed out") and app.user in last
        assert "1 session" in last and "--terminate" in last
        assert read_lock(store, layout) is None
        state = load_state(store, layout)
        assert state.current is not None and state.current.phase is Phase.DRAIN
        assert fresh(store, layout).color is Color.GREEN
        assert connects(app.url)  # not retired: the straggler can still reconnect
        again = cli(*args)
        assert again.code == 4 and "resuming rotation" in again.err
    finally:
        holder.close()
    finished = cli(*args)
    assert finished.code == 0, finished.err
    assert "(resumed)" in finished.err
    assert [h.result for h in load_state(store, layout).history] == ["done"]
    assert "not permitted to log in" in login_error(app.url)


def test_terminate_ends_old_sessions(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    holder = app.connect(app.url)
    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=opts(drain_timeout=1.0, terminate=True),
    )
    assert result.finished and result.terminated == 1
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()
    assert "not permitted to log in" in login_error(app.url)


def test_drain_timeout_via_api_is_resumable(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    with app.connect(app.url), pytest.raises(DrainTimeout):
        rotate(store, layout, admin_url=app.admin_url, options=opts(drain_timeout=0.5))
    result = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert result.finished and result.resumed


def test_rotate_refuses_while_inactive_user_in_use(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    initialise(app, store, layout)
    rotate(store, layout, admin_url=app.admin_url, options=opts())
    rollback(store, layout, admin_url=app.admin_url)  # green stays usable after a rollback
    green = stored_url(store, layout, Color.GREEN)
    with app.connect(green), pytest.raises(RotationError, match="still has 1 session"):
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert read_lock(store, layout) is None
    assert load_state(store, layout).current is None


def test_lock_is_exclusive_in_process(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    from credflip.state import hold_lock

    with hold_lock(store, layout, purpose="test"), pytest.raises(LockHeld, match="for test"):
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert read_lock(store, layout) is None


def test_state_document_stays_under_4kb(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    for _ in range(3):
        rotate(store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.0))
    state = load_state(store, layout)
    state.history = state.history * 40
    text = state.to_json()
    assert len(text.encode()) <= 4096
    assert len(json.loads(text)["history"]) < 120
