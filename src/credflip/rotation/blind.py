"""No blind instance: the old user is not retired while a replica that may serve it is unwatched.

The servers the drain watches know their replicas (:meth:`Fleet.replica_check
<credflip.instances.Fleet.replica_check>`). One that none of the watched
instances is, and that ``--unwatched-ok`` does not accept, stops a rotation
twice over: before the pointer moves (nothing changed yet: exit 1), and again
right before the retire, for a replica attached after the switch (exit 4; the
old user keeps its login and the next run drains again, watching what was
added).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigurationError, DrainBlocked
from ..instances import Fleet
from ..state import Phase, Rotation
from .context import Context
from .options import RotateOptions

__all__ = ["before_switch", "check_unwatched"]

_WHAT = "the drain would not see clients of the old user on replicas that no instance watches"


def before_switch(
    fleet: Fleet,
    current: Rotation | None,
    options: RotateOptions,
    notice: Callable[[str], None],
) -> None:
    """Refuse (:class:`ConfigurationError`) while the pointer has not moved; note accepted ones.

    Past the switch it is the retire's check that counts (:func:`check_unwatched`).
    """
    if current is not None and current.phase.switched:
        return
    check = fleet.replica_check(options.unwatched_ok)
    blocking = check.blocking()
    if blocking:
        unchanged = "nothing was changed" if current is None else "the pointer was not moved"
        raise ConfigurationError(f"{_WHAT}: {'; '.join(blocking)}; {unchanged}")
    for note in check.notes():
        notice(note)


def check_unwatched(ctx: Context) -> None:
    """Right before the retire: refuse (:class:`DrainBlocked`, exit 4) while a replica is
    unwatched, and send the rotation back to the drain so that the next run watches
    what the operator adds before it retires."""
    blocking = ctx.fleet.unwatched(ctx.options.unwatched_ok, retry=True)
    if not blocking:
        return
    ctx.rot.phase = Phase.DRAIN
    raise DrainBlocked(
        f"not retiring {ctx.old_user!r}: {_WHAT}: {'; '.join(blocking)}; it keeps its login; "
        f"run 'credflip rotate --env {ctx.layout.env}' again with the option named (the "
        f"drain resumes, watching what was added)"
    )
