"""``--terminate``: lock the old user, then end its idle sessions on every instance.

The drain calls it only when it could otherwise finish: every session left
has been idle for longer than the quiet window, and ``--min-drain`` passed.
Locked first, so that a terminated client cannot log back in with the old
password; standbys must know of the lock before their sessions are ended.
Clients re-resolve and get the new color.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..drain import Reading
from ..waiting import Wait
from . import messages
from .context import Context

__all__ = ["terminate"]


def terminate(ctx: Context, readings: Sequence[Reading], *, user: str | None = None) -> None:
    """Lock the old user and end its sessions; refuse while an instance is unreachable."""
    old = ctx.old_user if user is None else user
    down = [r.instance for r in readings if r.error is not None]
    if down:
        raise messages.cannot_terminate(old, down)
    ctx.admin.lock_user(old)
    ctx.fleet.wait_replayed(
        ctx.observer.position(),
        wait=Wait(ctx.options.replica_lag_timeout, deadline=ctx.options.deadline),
        why=f"the lock of {old!r}",
        notice=ctx.notice,
    )
    ended = ctx.fleet.terminate(old)
    ctx.rot.terminated += ended
    ctx.notice(messages.terminated(ended, old))
