"""``rotate --dry-run``: what a rotation would do, planned by the phases themselves, run nowhere.

Every phase's ``plan(ctx)`` is walked in the runner's order over the catalog
as it is now, with a context that stages writes instead of making them (so
verify plans the logins with the URLs prepare would write). Statements are
rendered as the driver would send them, with the password, its verifier or
hash, and the admin's password as ``***``. Nothing is written and no lock is
taken; the checks a real run makes before changing anything make the dry run
fail the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..engines import Engine, engine_for
from ..engines.base import Step
from ..errors import CredflipError
from ..layout import Layout
from ..state import Phase, load_state, require_engine
from ..stores.base import Store
from ..urls import DbUrl
from . import messages
from .context import Context
from .fleet import env_fleet, instance_list
from .lease import read_lease, require_lessee
from .options import RotateOptions
from .params import read_pointer
from .plan import PhasePlan, Write
from .proxy import dry_run_proxy
from .runner import HANDLERS
from .start import new_rotation, preflight
from .watch import drain_policy

__all__ = ["PlannedParameter", "PlannedPredrain", "RotationPlan", "plan_rotation"]


@dataclass(frozen=True)
class PlannedParameter:
    """A parameter the rotation would write."""

    name: str
    kind: str  # "SecureString" or "String"
    value: str  # passwords masked
    when: str


@dataclass(frozen=True)
class PlannedPredrain:
    """After a rollback that had switched: the rolled-back color, drained before prepare."""

    user: str
    color: str
    #: When the rollback moved the pointer back (wall clock): the drain counts from it.
    since: float
    window: float
    #: Seconds after *since* it can end at the earliest, when nothing uses it.
    earliest_after: float
    watch: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RotationPlan:
    """Everything ``rotate --dry-run`` prints, in the order a rotation does it."""

    env: str
    from_color: str
    to_color: str
    from_user: str
    to_user: str
    #: The admin URL's database: statements elsewhere say where they run.
    main_database: str
    #: Drained first, when the last rotation was rolled back after its switch.
    predrain: PlannedPredrain | None = None
    #: Rights a run that died lent the admin (:class:`~.lease.Lease`), and the SQL
    #: that takes back what the admin still holds of them, before anything else.
    lease: str | None = None
    take_back: list[tuple[str, str]] = field(default_factory=list)
    prepare: list[tuple[str, str]] = field(default_factory=list)  # (database, SQL)
    parameters: list[PlannedParameter] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    instances: list[tuple[str, str, list[str]]] = field(default_factory=list)
    counter_gaps: list[str] = field(default_factory=list)
    #: Replicas no instance watches that ``--unwatched-ok`` accepts (others refuse).
    unwatched: list[str] = field(default_factory=list)
    #: The drain may run on open sessions alone where a counter is missing.
    sessions_only: bool = False
    watch: list[tuple[str, str]] = field(default_factory=list)
    retire: list[tuple[str, str]] = field(default_factory=list)
    #: What the retire does besides its SQL (behind PgBouncer: its connections ended).
    retire_notes: list[str] = field(default_factory=list)
    retire_mode: str = "lock"
    client_ttl: float = 0.0
    min_drain: float = 0.0
    quiet: float = 0.0
    drain_timeout: float = 0.0
    earliest_retire_after: float = 0.0


def plan_rotation(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    options: RotateOptions | None = None,
    engine: Engine | None = None,
) -> RotationPlan:
    """Plan the next rotation of *layout*'s env without changing anything."""
    options = options or RotateOptions()
    state = load_state(store, layout)
    if state.current is not None:
        raise messages.dry_run_under_way(state.current.id, state.current.phase, layout.env)
    own = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    eng.lock_wait = options.lock_wait(eng.lock_wait)
    try:
        require_engine(state, eng.name, layout)
        lease = read_lease(store, layout)
        if lease is not None:
            require_lessee(lease, eng.admin_url, layout)
        state.instances = instance_list(state.instances, options)  # not saved
        fleet = env_fleet(store, layout, state, eng)
        try:
            pointer = read_pointer(store, layout)
            accepted: list[str] = []
            ctx = Context(store, layout, fleet, state, options, dry_run=True)
            dry_run_proxy(ctx)
            pooled = None if ctx.rds_proxy is None else ctx.rds_proxy.name
            preflight(fleet, state, pointer, options, accepted.append, pooled=pooled)
            state.current = new_rotation(ctx, pointer)  # not saved
            plans: dict[Phase, PhasePlan] = {}
            for phase, handler in HANDLERS.items():
                plans[phase] = planned = handler.plan(ctx)
                ctx.write(planned.writes)
            plan = _describe(ctx, eng, plans)
            plan.unwatched.extend(accepted)
            if lease is None:
                return plan
            plan.take_back.extend(_rendered(eng, eng.plan_take_back(lease.rights)))
            return dataclasses.replace(plan, lease=lease.describe())
        finally:
            fleet.close()
    finally:
        if own:
            eng.close()


def _describe(ctx: Context, eng: Engine, plans: dict[Phase, PhasePlan]) -> RotationPlan:
    """The dry run's report of the phases' plans."""
    rot, opts = ctx.rot, ctx.options
    policy = drain_policy(rot)
    first = plans[Phase.PREPARE].predrain
    plan = RotationPlan(
        env=ctx.layout.env,
        from_color=rot.from_color.value,
        to_color=rot.to_color.value,
        from_user=ctx.old_user,
        to_user=ctx.new_user,
        main_database=eng.admin_url.database or eng.admin_url.user,
        predrain=None
        if first is None
        else PlannedPredrain(
            first.user,
            first.color.value,
            first.since,
            first.window,
            first.shortest,
            _rendered(eng, first.steps),
        ),
        retire_mode=opts.retire,
        client_ttl=opts.client_ttl,
        min_drain=opts.min_drain,
        quiet=policy.window,
        drain_timeout=policy.default_timeout if opts.drain_timeout is None else opts.drain_timeout,
        earliest_retire_after=policy.shortest,
        prepare=_rendered(eng, plans[Phase.PREPARE].steps),
        watch=_rendered(eng, plans[Phase.DRAIN].steps),
        retire=_rendered(eng, plans[Phase.RETIRE].steps),
        verify=[f"{login.label} ({login.url})" for login in plans[Phase.VERIFY].logins],
        counter_gaps=ctx.counter_gaps(ctx.old_user),
        sessions_only=opts.accepts_sessions_only(ctx.state.sessions_only),
    )
    plan.parameters.extend(_prepared(plans[Phase.PREPARE]))
    plan.parameters.extend(
        [
            PlannedParameter(ctx.layout.lock, "String", "who holds it", "first, create-only"),
            PlannedParameter(ctx.layout.state, "String", "the phase", "at every boundary"),
            *(_parameter(w, "switch") for w in plans[Phase.SWITCH].writes),
        ]
    )
    for inst, sigs in ctx.fleet.signals():
        names = (
            ["unreachable: " + str(sigs)]
            if isinstance(sigs, CredflipError)
            else [s.name for s in sigs if s.available]
        )
        plan.instances.append((inst.address, inst.source, names))
    pooler = ctx.fleet.pooler
    if pooler is not None:
        plan.instances.append((pooler.address, pooler.name, [s.name for s in pooler.signals()]))
        plan.retire_notes.append(
            f"lock {ctx.old_user!r} and end the server connections {pooler.label} "
            f"keeps of it (pg_terminate_backend of their backends, none serving a client; "
            f"a client of it there after the lock: back to the drain)"
        )
    return plan


def _prepared(planned: PhasePlan) -> list[PlannedParameter]:
    """What prepare writes: the URLs, then (behind RDS Proxy) the new color's secret."""
    out = [_parameter(w, "prepare") for w in planned.writes]
    when = "prepare, before verify"
    out += [
        PlannedParameter(x.name, "Secrets Manager secret", x.shown, when) for x in planned.secrets
    ]
    return out


def _parameter(write: Write, when: str) -> PlannedParameter:
    return PlannedParameter(write.name, write.kind, write.shown, when)


def _rendered(engine: Engine, steps: list[Step]) -> list[tuple[str, str]]:
    """The statements as the engine executes them (each connection's timeouts first)."""
    return [(step.database, engine.render(step)) for step in engine.with_limits(steps)]
