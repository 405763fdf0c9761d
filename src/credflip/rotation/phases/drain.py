"""drain: wait until no client uses the old user, on every instance.

The statements are the watch: on PostgreSQL the old user's new logins are made
to run as itself, so that its statements are counted under it. The waiting is
:mod:`..watch`, an I/O shell around the pure tracker in :mod:`credflip.drain`.
"""

from __future__ import annotations

from ...state import Phase
from ..context import Context
from ..plan import PhasePlan
from ..watch import watch, watch_steps
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The statements that make the old user's logins countable, where they can be."""
    return PhasePlan(Phase.DRAIN, steps=watch_steps(ctx, ctx.old_user))


def run(ctx: Context) -> bool:
    """Start watching, then sample until the old user may be retired (or a safe stop)."""
    ctx.require_switched()
    # Asked before the watch changes what it looks at.
    counting = ctx.observer.count_problem(ctx.old_user, ctx.state.group) is None
    ctx.observer.execute(plan(ctx).steps)
    return watch(ctx, counting=counting)


HANDLER = PhaseHandler(plan, run)
