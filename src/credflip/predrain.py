"""When an inactive color must be drained before its password changes, from the history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .layout import Color

if TYPE_CHECKING:
    from .state import HistoryEntry

__all__ = ["predrain_due"]


def predrain_due(
    history: Sequence[HistoryEntry], color: Color, now: Callable[[], float]
) -> float | None:
    """From when *color*, inactive and about to be prepared, must be drained like an old
    user before its password changes (the primary's clock); None when nothing can still
    use it.

    The newest entry tells, as each records what it left its colors in: a finished
    rotation drained and retired the color it left (None); a rollback, when the color it
    left stopped being active (None when its password changed after a drain: prepared
    before a rollback that never switched). An entry that left *color* active, while
    the pointer now names the other color, means the pointer moved without a record (a
    rollback killed after moving it back): from *now()*.
    """
    if not history:
        return None
    last = history[-1]
    if last.to_color is color:
        return now()
    return last.predrain_since
