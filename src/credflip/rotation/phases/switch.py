"""switch: write the pointer. This is the one moment clients change color."""

from __future__ import annotations

from ...state import Phase
from ..context import Context
from ..plan import PhasePlan, Write
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """One write: the pointer names the new color."""
    return PhasePlan(
        Phase.SWITCH, writes=[Write(ctx.layout.pointer, ctx.rot.to_color.value, secure=False)]
    )


def run(ctx: Context) -> bool:
    """Move the pointer and note when (the drain counts from it)."""
    ctx.write(plan(ctx).writes)
    ctx.rot.switched_at = ctx.wall()
    return True


HANDLER = PhaseHandler(plan, run)
