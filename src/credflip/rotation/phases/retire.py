"""retire: lock the old user (reversible) or drop it, once the drain let it go."""

from __future__ import annotations

from ...instances import pooled
from ...state import Phase
from ...waiting import Wait
from .. import messages
from ..blind import check_unwatched
from ..context import Context
from ..plan import PhasePlan
from ..watch import watch_steps
from . import PhaseHandler

__all__ = ["HANDLER"]

#: Seconds PgBouncer gets to notice that the server ended the old user's connections.
POOLER_LETS_GO = 10.0


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
    """Retire the old user, only while the pointer names the new one.

    Behind PgBouncer the old user is locked first, then the server connections
    PgBouncer still keeps of it are ended (its clients left: the drain saw to
    that), so that it is gone from PgBouncer too and the next rotation's drain
    starts clean; then the plan runs (a dropped role's sessions could no longer
    be found by its name).
    """
    ctx.require_switched()
    check_unwatched(ctx)
    if ctx.fleet.pooler is not None:
        end_pooler_connections(ctx, ctx.old_user)
    ctx.admin.execute(plan(ctx).steps)
    return True


def end_pooler_connections(ctx: Context, user: str) -> None:
    """Lock *user* and end the server connections PgBouncer keeps of it."""
    pooler = ctx.fleet.pooler
    assert pooler is not None  # noqa: S101 - only called behind a pooler
    ctx.admin.lock_user(user)
    wait = Wait(POOLER_LETS_GO, deadline=ctx.options.deadline, interval=0.1)
    ended, left = pooled.end_pooled(ctx.fleet, user, wait=wait)
    ctx.notice(messages.pooled_ended(user, pooler.label, ended, left))


HANDLER = PhaseHandler(plan, run)
