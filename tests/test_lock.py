"""The rotation lock: takeovers of a stale lock race safely, and the lock is fenced.

Two processes that find the same stale lock both try to take it over: the
store lets exactly one through (SQLite: one conditional UPDATE; SSM, which
has no conditional overwrite: a create-only claim). A rotation whose lock is
taken over while it runs stops (exit 3) before its next write to the store.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import App
from faults import wait_for
from helpers import (
    assert_pointer_connects,
    connects,
    draining,
    dump,
    login_error,
    rotate_process,
    stored_url,
)

from credflip import commands
from credflip.errors import LockHeld, LockLost
from credflip.layout import Color, Layout
from credflip.lock import LockInfo, hold_lock, read_lock
from credflip.rotation import Event, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase, load_state
from credflip.stores import open_store
from credflip.stores.base import Store, claim_name
from credflip.stores.ssm import SsmStore

OPTIONS = RotateOptions(client_ttl=0.2, quiet=0.2)


def stale_lock() -> LockInfo:
    """A lock whose holder certainly died: its declared expiry passed (a Lambda's)."""
    now = time.time()
    return LockInfo("sbx_user1051", "169.254.10.1", 8, now - 900, token="gone", expires_at=now - 1)


def other_holder() -> LockInfo:
    """A live lock of another process (another host): what a takeover leaves."""
    return LockInfo("ops", "other-host", 4242, time.time(), purpose="rotate", token="theirs")


# -- two takeovers of one stale lock ----------------------------------------------


def _take_over(url: str, env: str, start: Any, results: Any) -> None:
    store = open_store(url)
    start.wait()
    try:
        with hold_lock(store, Layout(env), purpose="race"):
            results.put(True)
            start.wait()  # hold it until everyone tried
    except LockHeld:
        results.put(False)
        start.wait()
    finally:
        store.close()


def test_two_takeovers_of_a_stale_lock_let_exactly_one_through(
    store: Store, layout: Layout
) -> None:
    """Four processes, each with its own store client, find the same stale lock at once
    and try to take it over: exactly one holds the lock, the others are refused."""
    stale = stale_lock().to_json()
    store.put(layout.lock, stale, overwrite=False)
    ctx = multiprocessing.get_context("spawn")
    racers = 4
    start, results = ctx.Barrier(racers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_take_over, args=(store.url, layout.env, start, results))
        for _ in range(racers)
    ]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=60)  # everyone tries at once
        outcome = [results.get(timeout=60) for _ in procs]
        held = read_lock(store, layout)
        start.wait(timeout=60)  # let the winner release
    finally:
        for proc in procs:
            proc.join(60)
    assert sorted(outcome) == [False] * (racers - 1) + [True], outcome
    assert held is not None and held.purpose == "race"
    assert read_lock(store, layout) is None
    # The winner dropped the claim it took the stale lock with (SSM).
    assert store.get(claim_name(layout.lock, stale)) is None


def test_a_late_takeover_loses_and_leaves_no_claim(store: Store, layout: Layout) -> None:
    """A process that read the stale lock before another replaced it (and released it):
    its replace finds another value, changes nothing and leaves no claim behind."""
    stale, theirs = stale_lock().to_json(), other_holder().to_json()
    store.put(layout.lock, theirs, overwrite=False)
    assert not store.replace_if(layout.lock, stale, LockInfo.mine("rotate").to_json())
    assert store.get(layout.lock) == theirs
    assert store.get(claim_name(layout.lock, stale)) is None


def test_a_takeover_already_claimed_is_refused_until_unlock_force(
    store: Store, layout: Layout
) -> None:
    """A process that claimed a stale lock and died before replacing it: the next
    takeover is refused with what to do, and ``unlock --force`` clears both."""
    stale = stale_lock().to_json()
    store.put(layout.lock, stale, overwrite=False)
    if isinstance(store, SsmStore):
        store.put(claim_name(layout.lock, stale), "a taker that died", overwrite=False)
        with (
            pytest.raises(LockHeld, match="another process is taking over the stale lock"),
            hold_lock(store, layout, purpose="rotate"),
        ):
            pass
    store.put(layout.state, '{"engine": "postgresql", "users": {}}')
    held = commands.unlock(store, layout, force=True)
    assert held is not None and held.token == "gone"
    assert store.get(claim_name(layout.lock, stale)) is None
    with hold_lock(store, layout, purpose="rotate") as mine:
        assert read_lock(store, layout) == mine


# -- the fence: a lock taken over while a rotation runs -----------------------------


def green_role(app: App) -> tuple[Any, ...]:
    """The green user's password verifier and login right."""
    with app.su() as conn:
        row = conn.execute(
            "SELECT rolpassword, rolcanlogin FROM pg_authid WHERE rolname = %s", [app.green]
        ).fetchone()
    assert row is not None
    return tuple(row)


def take_over(store: Store, layout: Layout) -> LockInfo:
    """What a process taking over the lock does to it: its own record replaces ours."""
    theirs = other_holder()
    with open_store(store.url) as other:  # another client, as another process has
        other.put(layout.lock, theirs.to_json())
    return theirs


@pytest.mark.parametrize("phase", [Phase.PREPARE, Phase.SWITCH])
def test_a_lock_taken_over_mid_rotation_stops_it_before_its_next_write(
    app: App, store: Store, layout: Layout, phase: Phase
) -> None:
    """The lock changes hands as *phase* starts: the run stops with exit 3 before that
    phase writes anything (prepare: before any statement; switch: the pointer), the
    other holder's lock stays, and the rotation resumes from where it was recorded."""
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is phase:
            take_over(store, layout)
            before.extend(dump(store))

    before: list[tuple[str, str]] = []
    green = green_role(app)
    with pytest.raises(LockLost) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=OPTIONS, on_event=on_event)
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "\n" not in message and "was taken over by ops on other-host" in message
    assert app.url.password not in message
    # Nothing was written after the takeover: not the state, the URLs or the pointer.
    assert dump(store) == before
    held = read_lock(store, layout)
    assert held is not None and held.token == "theirs"
    state = load_state(store, layout)
    assert state.current is not None and state.current.phase is phase
    assert assert_pointer_connects(store, layout) is Color.BLUE
    if phase is Phase.PREPARE:
        # Stopped at prepare's first write, before any statement: green is as it was.
        assert not state.current.prepared
        assert green_role(app) == green
    # The new holder finishes (here: it is gone and the operator breaks its lock).
    commands.unlock(store, layout, force=True)
    result = rotate(store, layout, admin_url=app.admin_url, options=OPTIONS)
    assert result.finished and result.resumed
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert app.locked_marker in login_error(app.url)


def test_the_cli_exits_3_when_its_lock_is_taken_over_in_the_drain(app: App, tmp_path: Path) -> None:
    """``credflip rotate`` in its own process; the test takes the lock over while the
    drain waits for client caches: the drain's next write (its end) is refused, the
    command exits 3 with one line, and the old user was not retired."""
    from credflip.stores.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("fenced-cli")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    proc = rotate_process(app, store, layout, "--client-ttl", "3s", "--quiet", "200ms")
    try:
        wait_for(lambda: draining(store, layout), timeout=30, what="the drain")
        take_over(store, layout)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("credflip: error: the lock of env 'fenced-cli' was taken over"), err
    assert app.admin_url.password not in err
    state = load_state(store, layout)
    assert state.current is not None and state.current.phase is Phase.DRAIN
    assert connects(app.url)  # blue was not retired
    assert read_lock(store, layout).token == "theirs"  # type: ignore[union-attr]
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert connects(stored_url(store, layout, Color.GREEN))
