"""``rollback``: restore the color that was active before the last (or current) rotation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from ..actor import Actor, run_by
from ..engines import Engine, engine_for
from ..errors import CredflipError
from ..layout import Color, Layout
from ..lock import FencedStore, hold_lock
from ..state import Rotation, State, load_state
from ..stores.base import Store
from ..urls import DbUrl
from . import messages, milestones
from .context import clock_skew
from .events import Notice, OnEvent, RollbackResult, emit
from .journal import record_rollback
from .lease import keeping_leases
from .params import read_pointer, read_urls

__all__ = ["rollback"]


def rollback(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    probe: str | None = None,
    engine: Engine | None = None,
    on_event: OnEvent = None,
    lock_timeout: float | None = None,
    actor: Actor | None = None,
) -> RollbackResult:
    """Restore the color that was active before the last (or current) rotation.

    Before the switch this abandons the rotation and locks the half-prepared
    user. After it, the old user is unlocked if needed, its URLs are verified,
    and only then does the pointer move back. Refused when the old user was
    dropped or its URLs no longer connect. *lock_timeout*: how long one statement
    may wait for a lock (default: the engine's, 1 s). What a run that died lent the
    admin is taken back first. *actor* is who rolls back, for the history (default: this
    process as a program).
    """
    load_state(store, layout)
    by = actor if actor is not None else run_by(store, "program")
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    if lock_timeout is not None:
        eng.lock_wait = dataclasses.replace(eng.lock_wait, timeout=lock_timeout)

    def notice(message: str) -> None:
        emit(on_event, Notice(message))

    try:
        with hold_lock(store, layout, purpose="rollback", notice=notice) as mine:
            # Every write first checks that the lock is still ours.
            fenced = FencedStore(store, layout, mine)
            with (
                keeping_leases(eng, fenced, layout, by="rollback", notice=notice) as leases,
                eng.lock_phase(),  # one phase: its plans share one lock budget
            ):
                leases.settle(eng)
                return _roll_back(fenced, layout, eng, probe, notice, by, on_event)
    finally:
        if own_engine:
            eng.close()


def _roll_back(
    store: Store,
    layout: Layout,
    eng: Engine,
    probe: str | None,
    notice: Callable[[str], None],
    by: Actor,
    on_event: OnEvent,
) -> RollbackResult:
    """The rollback, with the lock held."""
    state = load_state(store, layout)
    pointer = read_pointer(store, layout)
    cur = state.current
    started_at = cur.started_at if cur else time.time()
    if cur is not None and not cur.phase.switched and pointer is cur.from_color:
        done = _abandon(store, layout, state, eng, cur, by)
        milestones.rolled_back(
            layout,
            state,
            on_event,
            by,
            rotation=cur,
            back=done.color,
            away=cur.to_color,
            flipped=False,
            unlocked=False,
        )
        return done
    back, away = _colors(cur, state)
    finished = state.last.id if cur is None and state.last is not None else None
    if pointer is not away and pointer is not back:
        raise messages.rollback_pointer_moved(pointer, away)
    # The primary's clock, read before anything changes: the next rotation
    # drains *away* from when the pointer left it, on the clock the drain
    # reads (and the steps below cannot do without the database anyway).
    skew = clock_skew(eng)
    # pointer is back: an earlier rollback moved it and stopped before
    # recording; finish it (the steps below are safe to repeat).
    unlocked = _restore(store, layout, state, eng, back, away, probe, notice)
    flipped = pointer is not back
    if flipped:
        store.put(layout.pointer, back.value, secure=False)
    since = time.time() + skew  # after the move: never before it
    record_rollback(store, layout, state, back, away, started_at, predrain_since=since, by=by)
    milestones.rolled_back(
        layout,
        state,
        on_event,
        by,
        rotation=cur,
        back=back,
        away=away,
        flipped=flipped,
        unlocked=unlocked,
        finished=finished,
    )
    return RollbackResult(back, state.users[back], flipped, unlocked)


def _abandon(
    store: Store, layout: Layout, state: State, eng: Engine, cur: Rotation, by: Actor
) -> RollbackResult:
    """The pointer never moved: abandon *cur*, and put the half-prepared user back to the
    locked state an inactive color has.

    Not one prepare never touched: after an earlier rollback its clients may still
    use it, and the next rotation drains it first, from the same instant (the one
    *cur* recorded when it started).
    """
    if cur.prepared:
        eng.lock_user(state.users[cur.to_color])
    since = None if cur.prepared else cur.predrain_since
    record_rollback(
        store,
        layout,
        state,
        cur.from_color,
        cur.to_color,
        cur.started_at,
        switched=False,
        predrain_since=since,
        by=by,
    )
    return RollbackResult(cur.from_color, state.users[cur.from_color], False, False)


def _colors(cur: Rotation | None, state: State) -> tuple[Color, Color]:
    """(the color to go back to, the color to leave)."""
    if cur is not None:
        return cur.from_color, cur.to_color
    last = state.last
    if last is None or last.result != "done":
        raise messages.nothing_to_roll_back(never_rotated=last is None)
    return last.from_color, last.to_color


def _restore(
    store: Store,
    layout: Layout,
    state: State,
    eng: Engine,
    back: Color,
    away: Color,
    probe: str | None,
    notice: Callable[[str], None],
) -> bool:
    """Make *back*'s user log in again and prove its URLs; True when it had to be unlocked."""
    user = state.users[back]
    current = eng.user_state(user)
    if not current.exists:
        raise messages.rollback_user_dropped(user, back)
    # The drain may have let this user's logins run as itself.
    eng.end_watch(user, state.group)
    unlocked = False
    if not current.can_login:
        eng.unlock_user(user)
        unlocked = True
        notice(messages.unlocked(user, back))
    for role, url in read_urls(store, layout, back).items():
        try:
            eng.verify(url, probe=probe)
        except CredflipError as exc:
            if unlocked:
                eng.lock_user(user)
            raise messages.rollback_url_fails(back, role, url, exc, away) from exc
    return unlocked
