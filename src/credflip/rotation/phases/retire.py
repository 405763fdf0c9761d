"""retire: lock the old user (reversible) or drop it, once the drain let it go.

Right before its statements, the retire reads every instance once more, as the
drain's next sample would (:func:`~credflip.rotation.watch.last_look`): what it
did before them (the phase boundary written, the pointer and the replicas
checked, the plan) takes time the drain did not watch. Use there sends the
rotation back to the drain; the plan is still the statements the retire runs.
"""

from __future__ import annotations

from ...engines import Sessions
from ...errors import UsedAtRetire
from ...instances import pooled
from ...state import Phase
from ...waiting import Wait
from .. import messages
from ..blind import check_unwatched
from ..context import Context
from ..plan import PhasePlan
from ..watch import last_look, watch_steps
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
    """Retire the old user, only while the pointer names the new one and one last look
    at every instance, after the checks and right before the first lock, shows no use
    (else the rotation goes back to the drain: :func:`~credflip.rotation.watch.last_look`,
    and the old user keeps its login, unlocked again if the drain or this phase had
    locked it already).

    Behind PgBouncer the old user is locked first, then the server connections
    PgBouncer still keeps of it are ended (:func:`end_pooler_connections`), so that it
    is gone from PgBouncer too and the next rotation's drain starts clean; then the
    plan runs (a dropped role's sessions could no longer be found by its name).
    """
    ctx.require_switched()
    check_unwatched(ctx)
    try:
        if ctx.fleet.pooler is None:
            steps = plan(ctx).steps
            last_look(ctx)
        else:
            last_look(ctx)
            end_pooler_connections(ctx, ctx.old_user)
            steps = plan(ctx).steps
    except UsedAtRetire:
        ctx.admin.unlock_user(ctx.old_user)
        raise
    ctx.admin.execute(steps)
    return True


def end_pooler_connections(ctx: Context, user: str) -> None:
    """Lock *user* and end the server connections PgBouncer keeps of it, none that serves
    a client.

    A client of *user* connected to PgBouncer after the lock came after the last look
    (use it could not see): its transaction must not be cut, so nothing is ended and
    :class:`~credflip.errors.UsedAtRetire` sends the rotation back to the drain. Else
    the server ends those connections that are idle (a busy one serves a client that
    came meanwhile: PgBouncer refuses a locked user's new clients with ``auth_query``,
    not with an ``auth_file``), and PgBouncer is asked once more.
    """
    pooler = ctx.fleet.pooler
    assert pooler is not None  # noqa: S101 - only called behind a pooler
    ctx.admin.lock_user(user)
    seen = pooler.view(user)
    _no_clients(user, pooler.label, seen.clients)
    idle = tuple(b for b in seen.backends if b not in seen.linked)
    wait = Wait(POOLER_LETS_GO, deadline=ctx.options.deadline, interval=0.1)
    ended, left = pooled.end_pooled(ctx.fleet, user, idle, wait=wait)
    _no_clients(user, pooler.label, pooler.view(user).clients)
    ctx.notice(messages.pooled_ended(user, pooler.label, ended, left))


def _no_clients(user: str, label: str, clients: Sessions) -> None:
    """Raise :class:`~credflip.errors.UsedAtRetire` when *clients* of *user* are there."""
    if clients.count:
        why = f"{clients.count} client(s) on {label} ({clients.describe()}) after the lock"
        raise messages.used_at_retire(user, [why])


HANDLER = PhaseHandler(plan, run)
