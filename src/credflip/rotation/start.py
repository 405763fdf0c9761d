"""``rotate``: take the lock, check what must hold before anything changes, run the phases.

The database being away while the fleet is found and checked (a restart, a
failover) is waited out as inside a phase, within the same
``--reconnect-timeout``; every write to the store goes through the lock's
fence (:class:`~credflip.lock.FencedStore`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from ..actor import Actor, run_by
from ..backoff import Backoff
from ..drain import DrainPolicy
from ..engines import Engine, engine_for
from ..errors import CredflipError, DatabaseUnavailable
from ..halt import counting_failures
from ..instances import Fleet
from ..layout import Color, Layout
from ..lock import FencedStore, hold_lock
from ..state import Phase, Rotation, State, load_state, predrain_due, require_engine, save_state
from ..stores.base import Store
from ..urls import DbUrl
from . import messages, milestones
from .blind import before_switch
from .context import Context
from .events import Notice, OnEvent, RotationResult, emit
from .fleet import env_fleet, instance_list
from .journal import Journal
from .lease import LeaseKeeper, keeping_leases
from .milestones import RunReport, reporting
from .options import RotateOptions
from .params import read_pointer
from .proxy import counters_required, proxy_name, settle_proxy
from .runner import RetryPolicy, run_phases
from .schedule import check_start, require_window

__all__ = ["preflight", "rotate"]


def rotate(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    options: RotateOptions | None = None,
    engine: Engine | None = None,
    on_event: OnEvent = None,
    lock_expires_at: float | None = None,
    actor: Actor | None = None,
) -> RotationResult:
    """Rotate the inactive user's password and move clients to it.

    Resumes an unfinished rotation from its recorded phase. Raises
    :class:`~credflip.errors.LockHeld` when another rotation runs,
    :class:`~credflip.errors.DrainTimeout` when old sessions outlast the drain (the rotation
    stays resumable), :class:`~credflip.errors.Halted` on a halted env and
    :class:`~credflip.errors.OutsideWindow` when no rotation is under way and ``options.window``
    is closed (nothing changed). A run that ends in another error counts towards halting the env
    (:mod:`credflip.halt`). With ``options.deadline`` the call may return early with
    ``finished=False``; call again to continue. *lock_expires_at* (wall clock) tells other
    processes when the lock may be considered stale if this one dies without releasing it
    (Lambda). *actor* is who runs it, for the history (default: this process as a program).
    """
    options = options or RotateOptions()
    # Clear errors before taking the lock: not managed, halted, outside the window.
    check_start(store, layout, options)
    by = actor if actor is not None else run_by(store, "program")
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    eng.lock_wait = options.lock_wait(eng.lock_wait)

    try:
        return _run(store, layout, eng, options, RunReport(layout, on_event, by), lock_expires_at)
    finally:
        if own_engine:
            eng.close()


def _run(
    store: Store,
    layout: Layout,
    eng: Engine,
    options: RotateOptions,
    report: RunReport,
    lock_expires_at: float | None,
) -> RotationResult:
    """The run, holding the env's lock: its failure counted, its milestones told."""
    on_event = report.on_event

    def notice(message: str) -> None:
        emit(on_event, Notice(message))

    def warn(message: str) -> None:
        emit(on_event, Notice(message, "warning"))

    with (
        hold_lock(
            store, layout, purpose="rotate", notice=notice, expires_at=lock_expires_at
        ) as mine,
        counting_failures(
            FencedStore(store, layout, mine), layout, options.halt_after, warn, halted=report.halted
        ) as tally,
    ):
        fenced = tally.store
        policy = RetryPolicy(Backoff(options.reconnect_timeout), deadline=options.deadline)
        with (
            keeping_leases(eng, fenced, layout, by="rotate", notice=notice) as leases,
            reporting(report),
        ):
            ctx, resumed = _begin(fenced, layout, eng, options, policy, leases, report)
            tally.secrets, tally.failures = ctx.secrets, ctx.state.failures
            try:
                journal = Journal(fenced, layout, ctx.state, report.actor)
                return run_phases(ctx, journal, resumed=resumed, policy=policy)
            finally:
                ctx.fleet.close()


def _begin(
    store: Store,
    layout: Layout,
    eng: Engine,
    options: RotateOptions,
    policy: RetryPolicy,
    leases: LeaseKeeper,
    report: RunReport,
) -> tuple[Context, bool]:
    """Take back what a run that died lent the admin, find the fleet, pass the checks and
    record the rotation; True when resumed.

    The first connections are retried like a phase: a failover under way when
    the rotation (re)starts is waited out within ``--reconnect-timeout`` (and
    the caller's deadline).
    """
    recorded: list[bool] = []
    on_event, by = report.on_event, report.actor

    def attempt() -> tuple[Context, bool]:
        state = load_state(store, layout)
        # A rotation finished by another run since the check before the lock: a new one
        # starts only inside the window.
        require_window(layout, state, options.window)
        recorded[:] = [state.current is not None]
        require_engine(state, eng.name, layout)
        leases.settle(eng)
        state.instances = instance_list(state.instances, options)
        fleet = env_fleet(store, layout, state, eng, notice=lambda m: emit(on_event, Notice(m)))
        try:
            ctx = Context(store, layout, fleet, state, options, on_event, leases, actor=by)
            report.begun(ctx)
            return ctx, _start_or_resume(ctx)
        except BaseException:
            fleet.close()
            raise

    def retrying(exc: CredflipError, delay: float, left: float) -> None:
        emit(on_event, Notice(messages.retrying_start(exc, delay, left), "warning"))

    try:
        return policy.call(attempt, retrying)
    except DatabaseUnavailable as exc:
        raise messages.not_started(exc, layout.env, any(recorded)) from exc


def preflight(
    fleet: Fleet,
    state: State,
    pointer: Color,
    options: RotateOptions,
    notice: Callable[[str], None] = lambda _m: None,
    *,
    revoked: bool = False,
    pooled: str | None = None,
) -> None:
    """What must hold before a rotation (or its dry run) changes anything.

    A resumed rotation is checked too: where the counters vanished since it
    started, nothing goes on until the operator enables one again or accepts
    the risk for this run. *revoked* says the run just cleared the env's
    stored ``sessions_only`` (the one change a refused run makes). *pooled*
    names the env's RDS Proxy: the counters must then count statements, and
    open sessions alone are never enough.
    """
    _primary_answers(fleet)
    fleet.require_session_views()
    current = state.current
    from_color = current.from_color if current is not None else pointer
    # An instance that does not answer is no missing counter: the drain counts
    # it as in use, and a new rotation is refused below when it cannot look.
    gaps = fleet.counter_gaps(
        state.users[from_color], state.group, unreachable=False, statements=bool(pooled)
    )
    # The predrain drains the new user the same way: its logins must count too.
    first = _predrained(state, pointer)
    if first is not None:
        more = fleet.counter_gaps(first, state.group, unreachable=False, statements=bool(pooled))
        gaps += [gap for gap in more if gap not in gaps]
    if gaps and pooled:
        raise counters_required(pooled, gaps, revoked=revoked)
    if gaps and not options.accepts_sessions_only(state.sessions_only):
        raise messages.missing_counters(gaps, required=options.require_counters, revoked=revoked)
    if current is not None:
        before_switch(fleet, current, options, notice)
        return
    # Open sessions refuse at once; after a rollback, prepare then also drains the
    # rolled-back color (counters, quiet window) before it changes its password. Behind
    # RDS Proxy idle ones are the proxy's pool, as in the drain: only a busy one refuses.
    target = state.users[pointer.other]
    for inst, found in fleet.sessions(target):
        if isinstance(found, CredflipError):
            raise messages.inactive_unobservable(target, inst, found)
        using = found.busy() if pooled else found
        if using.count:
            raise messages.inactive_in_use(
                target, pointer.other, pointer, inst.address, using.count, using.describe()
            )
    # After the checks above: an instance that cannot be reached is named there first.
    before_switch(fleet, current, options, notice)


def _primary_answers(fleet: Fleet) -> None:
    """Raise when the primary is away: the caller waits that out (a restart, a failover)."""
    _inst, signals = fleet.signals()[0]
    if isinstance(signals, DatabaseUnavailable):
        raise signals


def _predrained(state: State, pointer: Color) -> str | None:
    """The user a rotation (new, or resumed in prepare) drains before it prepares it, if
    it still must."""
    cur = state.current
    if cur is None:
        due = predrain_due(state.history, pointer.other, time.time) is not None
        return state.users[pointer.other] if due else None
    return state.users[cur.to_color] if cur.predraining else None


def new_rotation(ctx: Context, pointer: Color) -> Rotation:
    """The record of a rotation away from *pointer*, about to prepare: with when the
    color it prepares stopped being active, if it must be drained first (on the
    primary's clock, like every instant the drain reads)."""
    options = ctx.options
    return Rotation(
        id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2),
        from_color=pointer,
        to_color=pointer.other,
        phase=Phase.PREPARE,
        started_at=time.time(),
        client_ttl=options.client_ttl,
        min_drain=options.min_drain,
        quiet=quiet_window(options),
        predrain_since=predrain_due(ctx.state.history, pointer.other, ctx.wall),
        by=ctx.actor,
    )


def quiet_window(options: RotateOptions) -> float:
    """The quiet window *options* ask for (the default follows the client TTL)."""
    policy = DrainPolicy(client_ttl=options.client_ttl, quiet=options.quiet)
    return policy.window


def _start_or_resume(ctx: Context) -> bool:
    """Checks that must pass before anything changes; record the rotation. True when resumed."""
    pointer = read_pointer(ctx.store, ctx.layout)
    state, options = ctx.state, ctx.options
    current = state.current
    revoked = options.require_counters and state.sessions_only
    if revoked:
        # The operator's explicit word, kept even when the run is refused next
        # (and saved alone: the rest of the run's changes wait for the checks).
        state.sessions_only = False
        stored = load_state(ctx.store, ctx.layout)
        stored.sessions_only = False
        save_state(ctx.store, ctx.layout, stored)
        ctx.notice(messages.sessions_only_revoked(ctx.layout.env))
    pooled = proxy_name(ctx)
    preflight(ctx.fleet, state, pointer, options, ctx.notice, revoked=revoked, pooled=pooled)
    settled = settle_proxy(ctx, pointer, revoked=revoked)
    resumed = current is not None
    if current is None:
        state.current = new_rotation(ctx, pointer)
    else:
        ctx.notice(
            messages.resuming(current.id, current.from_color, current.to_color, current.phase)
        )
        # A resume never waits less than the rotation was started with.
        for name, given in (
            ("client_ttl", options.client_ttl),
            ("min_drain", options.min_drain),
            ("quiet", quiet_window(options)),
        ):
            recorded = getattr(current, name)
            if recorded is not None and recorded > given:
                ctx.notice(messages.using_recorded(name, recorded, given))
            setattr(current, name, max(recorded or 0.0, given))
    if settled is not None and ctx.rds_proxy is not None:
        ctx.store.put(ctx.layout.rds_proxy, ctx.rds_proxy.setting.to_json(), secure=False)
        ctx.notice(settled)
    save_state(ctx.store, ctx.layout, state)
    if not resumed:
        milestones.tell(ctx, "started")
    return resumed
