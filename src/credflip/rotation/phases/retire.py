"""retire: lock the old user (reversible) or drop it, once the drain let it go."""

from __future__ import annotations

from ...state import Phase
from ..blind import check_unwatched
from ..context import Context
from ..plan import PhasePlan
from ..watch import watch_steps
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The statements that retire the old user (and undo the drain's watch).

    What they are depends on how far the rotation got, not on who asks: a plan
    made before the switch (``--dry-run`` plans every phase before prepare)
    cannot compare the old user with a new one that prepare has not given its
    rights yet, so it compares the old user with itself, and plans as the
    drain's watch will leave the old user.
    """
    rot, old = ctx.rot, ctx.old_user
    drop, group = ctx.options.retire == "drop", ctx.state.group
    if rot.phase.switched:
        steps = ctx.admin.plan_retire(old, keep=ctx.new_user, group=group, drop=drop)
    else:
        watched = bool(watch_steps(ctx, old))
        steps = ctx.admin.plan_retire(old, keep=old, group=group, drop=drop, watched=watched)
    return PhasePlan(Phase.RETIRE, steps=steps)


def run(ctx: Context) -> bool:
    """Retire the old user, only while the pointer names the new one."""
    ctx.require_switched()
    check_unwatched(ctx)
    ctx.admin.execute(plan(ctx).steps)
    return True


HANDLER = PhaseHandler(plan, run)
