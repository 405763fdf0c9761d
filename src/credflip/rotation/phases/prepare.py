"""prepare: give the inactive user a fresh password and the active user's rights.

The active user is never touched. The new color's URLs are written only after
the database accepted the change; the primary's write position is recorded
so that verify can wait for the replicas to replay it.
"""

from __future__ import annotations

from ...layout import Color
from ...state import Phase, State, save_state
from .. import messages
from ..context import Context
from ..params import new_password
from ..plan import PhasePlan, Write
from ..watch import watch
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The statements that prepare the new user, and its URLs with the fresh password."""
    rot = ctx.rot
    password = new_password()
    ctx.secrets.append(password)
    steps = ctx.engine.plan_prepare(
        ctx.new_user, password, like=ctx.old_user, group=ctx.state.group
    )
    writes = [
        Write(
            ctx.layout.url(rot.to_color, role),
            url.with_credentials(ctx.new_user, password).secret,
            secure=True,
        )
        for role, url in ctx.urls(rot.from_color).items()
    ]
    return PhasePlan(Phase.PREPARE, steps=steps, writes=writes)


def rolled_back_since(state: State, to_color: Color) -> float | None:
    """When the last rotation was rolled back after its switch, if *to_color* was the
    color it had switched to (clients used it), wall clock; else None."""
    last = state.last
    if last is None or last.result != "rolled_back" or not last.switched:
        return None
    return last.finished_at if last.from_color is to_color else None


def predrain(ctx: Context, since: float) -> bool:
    """Drain the rolled-back color like an old user before its password changes.

    Clients moved to it during the rotation that was rolled back; those that
    do not follow the pointer may still use it. Its logins are made countable
    as the drain does; prepare then gives it the active user's settings back.
    """
    user, group = ctx.new_user, ctx.state.group
    counting = ctx.engine.count_problem(user, group) is None
    if ctx.fleet.can_count(user, group):
        ctx.engine.execute(ctx.engine.plan_watch(user, group))
    ctx.notice(messages.predraining(user, ctx.rot.to_color))
    if not watch(ctx, counting=counting, user=user, since=since):
        return False
    # What late sessions created meanwhile goes to the group, as at retire.
    ctx.engine.end_watch(user, group)
    ctx.rot.predrained = True
    ctx.rot.evidence = {}
    return True


def run(ctx: Context) -> bool:
    """Prepare the new user, note the write position, then write its URLs."""
    pointer = ctx.pointer()
    if pointer is not ctx.rot.from_color:
        raise messages.pointer_moved(pointer, ctx.rot.from_color, ctx.layout.env)
    since = None if ctx.rot.predrained else rolled_back_since(ctx.state, ctx.rot.to_color)
    if since is not None and not predrain(ctx, since):
        return False
    planned = plan(ctx)
    # Recorded before the first statement: a rollback from here on locks the new
    # color again, whatever step a crash stopped at.
    ctx.rot.prepared = True
    save_state(ctx.store, ctx.layout, ctx.state)
    ctx.engine.execute(planned.steps)
    # Replicas have the new password once they replayed this far.
    ctx.rot.position = ctx.engine.position()
    ctx.write(planned.writes)
    return True


HANDLER = PhaseHandler(plan, run)
