"""retire: lock the old user (reversible) or drop it, once the drain let it go."""

from __future__ import annotations

from ...state import Phase
from ..blind import check_unwatched
from ..context import Context
from ..plan import PhasePlan
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The statements that retire the old user (and undo the drain's watch)."""
    old, drop, group = ctx.old_user, ctx.options.retire == "drop", ctx.state.group
    if ctx.dry_run:
        # Planned before prepare gave the new color the old one's rights:
        # compare the old user with itself, and as the drain's plan left it.
        drain = ctx.plans.get(Phase.DRAIN)
        steps = ctx.engine.plan_retire(
            old,
            keep=old,
            group=group,
            drop=drop,
            watched=None if drain is None else bool(drain.steps),
        )
    else:
        steps = ctx.engine.plan_retire(old, keep=ctx.new_user, group=group, drop=drop)
    return PhasePlan(Phase.RETIRE, steps=steps)


def run(ctx: Context) -> bool:
    """Retire the old user, only while the pointer names the new one."""
    ctx.require_switched()
    check_unwatched(ctx)
    ctx.engine.execute(plan(ctx).steps)
    return True


HANDLER = PhaseHandler(plan, run)
