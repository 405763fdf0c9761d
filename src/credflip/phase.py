"""The phases of a rotation, in order (recorded in the state, :mod:`credflip.state`)."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(enum.StrEnum):
    """The phases of a rotation, in order."""

    PREPARE = "prepare"
    VERIFY = "verify"
    SWITCH = "switch"
    DRAIN = "drain"
    RETIRE = "retire"
    DONE = "done"

    @property
    def next(self) -> Phase:
        """The phase after this one (DONE is last)."""
        order = list(Phase)
        return order[min(order.index(self) + 1, len(order) - 1)]

    @property
    def switched(self) -> bool:
        """True for phases that start after the pointer was written."""
        return self in {Phase.DRAIN, Phase.RETIRE, Phase.DONE}
