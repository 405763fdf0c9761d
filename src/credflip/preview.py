"""``rotate --dry-run``: what a rotation would do, computed by the same code, run nowhere.

The plan is made by the functions a real rotation executes (the engine's
``plan_prepare``, ``plan_watch`` and ``plan_retire``) over the catalog as it is
now, and every statement is rendered as the driver would send it, with the
password, its verifier or hash, and the admin's password as ``***``. Nothing is
written and no lock is taken. Checks a real run makes before changing
anything make the dry run fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .drain import DrainPolicy
from .engines import Engine, engine_for
from .engines.base import Step
from .errors import CredflipError, RotationError
from .layout import ROLES, Layout
from .rotation import (
    RotateOptions,
    env_fleet,
    instance_list,
    new_password,
    preflight,
    read_pointer,
    read_urls,
)
from .state import load_state, require_engine
from .stores.base import Store
from .urls import DbUrl

__all__ = ["PlannedParameter", "RotationPlan", "plan_rotation"]


@dataclass(frozen=True)
class PlannedParameter:
    """A parameter the rotation would write."""

    name: str
    kind: str  # "SecureString" or "String"
    value: str  # passwords masked
    when: str


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
    prepare: list[tuple[str, str]] = field(default_factory=list)  # (database, SQL)
    parameters: list[PlannedParameter] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    instances: list[tuple[str, str, list[str]]] = field(default_factory=list)
    counter_gaps: list[str] = field(default_factory=list)
    watch: list[tuple[str, str]] = field(default_factory=list)
    retire: list[tuple[str, str]] = field(default_factory=list)
    retire_mode: str = "lock"
    client_ttl: float = 0.0
    min_drain: float = 0.0
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
        raise RotationError(
            f"rotation {state.current.id} is under way (phase {state.current.phase}): --dry-run "
            f"plans a new rotation only; run 'credflip rotate --env {layout.env}' to resume it or "
            f"'credflip rollback --env {layout.env}'"
        )
    own = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    try:
        require_engine(state, eng.name, layout)
        state.instances = instance_list(state.instances, options)  # not saved
        fleet = env_fleet(store, layout, state, eng)
        try:
            pointer = read_pointer(store, layout)
            preflight(fleet, state, pointer, options)
            old, new = state.users[pointer], state.users[pointer.other]
            urls = read_urls(store, layout, pointer)
            password = new_password()
            main = eng.admin_url.database or eng.admin_url.user
            plan = RotationPlan(
                env=layout.env,
                from_color=pointer.value,
                to_color=pointer.other.value,
                from_user=old,
                to_user=new,
                main_database=main,
                retire_mode=options.retire,
                client_ttl=options.client_ttl,
                min_drain=options.min_drain,
                drain_timeout=options.drain_timeout,
                earliest_retire_after=DrainPolicy(
                    client_ttl=options.client_ttl, min_drain=options.min_drain
                ).earliest_done(0.0),
            )
            plan.prepare.extend(
                _rendered(eng, eng.plan_prepare(new, password, like=old, group=state.group))
            )
            for role in ROLES:
                fresh = urls[role].with_credentials(new, password)
                plan.parameters.append(
                    PlannedParameter(
                        layout.url(pointer.other, role), "SecureString", str(fresh), "prepare"
                    )
                )
                plan.verify.append(f"the {pointer.other} {role} URL ({fresh})")
            plan.verify.extend(f"{i.address} ({i.source})" for i in fleet.instances)
            plan.parameters.extend(
                [
                    PlannedParameter(layout.lock, "String", "who holds it", "first, create-only"),
                    PlannedParameter(layout.state, "String", "the phase", "at every boundary"),
                    PlannedParameter(layout.pointer, "String", pointer.other.value, "switch"),
                ]
            )
            for inst, sigs in fleet.signals():
                names = (
                    ["unreachable: " + str(sigs)]
                    if isinstance(sigs, CredflipError)
                    else [s.name for s in sigs if s.available]
                )
                plan.instances.append((inst.address, inst.source, names))
            plan.counter_gaps.extend(fleet.counter_gaps(old, state.group))
            watch = eng.plan_watch(old, state.group) if fleet.can_count(old, state.group) else []
            plan.watch.extend(_rendered(eng, watch))
            # The retire check runs after prepare has given the new color the
            # old one's rights: compare the old user with itself.
            plan.retire.extend(
                _rendered(
                    eng,
                    eng.plan_retire(
                        old,
                        keep=old,
                        group=state.group,
                        drop=options.retire == "drop",
                        watched=bool(watch),
                    ),
                )
            )
            return plan
        finally:
            fleet.close()
    finally:
        if own:
            eng.close()


def _rendered(engine: Engine, steps: list[Step]) -> list[tuple[str, str]]:
    return [(step.database, engine.render(step)) for step in steps]
