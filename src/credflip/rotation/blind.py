"""No blind instance: the old user is not retired while a replica that may serve it is unwatched.

The servers the drain watches know their replicas (:meth:`Fleet.replica_check
<credflip.instances.Fleet.replica_check>`). One that none of the watched
instances is, and that ``--unwatched-ok`` does not accept, stops a rotation
twice over: before the pointer moves (nothing changed yet: exit 1), and again
right before the retire, for a replica attached after the switch (exit 4; the
old user keeps its login and the next run drains again, watching what was
added). The predrain asks the same before it ends idle sessions (``--terminate``);
its rotation stays in prepare, where the pointer has not moved.
"""

from __future__ import annotations

from collections.abc import Callable

from ..instances import Fleet
from ..state import Rotation
from . import messages
from .context import Context
from .options import RotateOptions

__all__ = ["before_switch", "check_unwatched"]


def before_switch(
    fleet: Fleet,
    current: Rotation | None,
    options: RotateOptions,
    notice: Callable[[str], None],
) -> None:
    """Refuse (:class:`~credflip.errors.ConfigurationError`) while the pointer has not moved;
    note accepted ones.

    Past the switch it is the retire's check that counts (:func:`check_unwatched`).
    """
    if current is not None and current.phase.switched:
        return
    check = fleet.replica_check(options.unwatched_ok)
    blocking = check.blocking()
    if blocking:
        raise messages.unwatched_before_switch(blocking, started=current is not None)
    for note in check.notes():
        notice(note)


def check_unwatched(ctx: Context, user: str | None = None) -> None:
    """Right before *user* (default: the old user) is retired or its sessions are ended:
    refuse (:class:`~credflip.errors.DrainBlocked`, exit 4) while a replica is unwatched.
    The journal records a rotation in drain or retire as back in the drain, so that the
    next run watches what the operator adds before it retires; a predrain stays in
    prepare."""
    blocking = ctx.fleet.unwatched(ctx.options.unwatched_ok, retry=True)
    if blocking:
        old = ctx.old_user if user is None else user
        predrain = old != ctx.old_user
        raise messages.unwatched_at_retire(old, blocking, ctx.layout.env, predrain=predrain)
