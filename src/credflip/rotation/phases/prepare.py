"""prepare: give the inactive user a fresh password and the active user's rights.

The active user is never touched. The new color's URLs are written only after
the database accepted the change; the primary's write position is recorded
so that verify can wait for the replicas to replay it.
"""

from __future__ import annotations

from ...state import Phase
from .. import messages
from ..context import Context
from ..params import new_password
from ..plan import PhasePlan, Write
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


def run(ctx: Context) -> bool:
    """Prepare the new user, note the write position, then write its URLs."""
    pointer = ctx.pointer()
    if pointer is not ctx.rot.from_color:
        raise messages.pointer_moved(pointer, ctx.rot.from_color, ctx.layout.env)
    planned = plan(ctx)
    ctx.engine.execute(planned.steps)
    # Replicas have the new password once they replayed this far.
    ctx.rot.position = ctx.engine.position()
    ctx.write(planned.writes)
    return True


HANDLER = PhaseHandler(plan, run)
