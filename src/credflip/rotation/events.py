"""What a rotation tells its caller while it runs, and what a call returns.

The rotation prints nothing: the CLI renders these events, the Lambda logs
them, tests collect them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..drain import DrainStatus, Reading
from ..layout import Color
from ..legacy import LegacyReport
from ..state import Phase

__all__ = [
    "DrainProgress",
    "Event",
    "Notice",
    "OnEvent",
    "PhaseFinished",
    "PhaseStarted",
    "RollbackResult",
    "RotationResult",
    "emit",
]


@dataclass(frozen=True)
class PhaseStarted:
    """A phase begins."""

    phase: Phase
    rotation_id: str
    from_color: Color
    to_color: Color
    resumed: bool = False


@dataclass(frozen=True)
class PhaseFinished:
    """A phase ended and the next one is recorded in the store."""

    phase: Phase
    seconds: float


@dataclass(frozen=True)
class DrainProgress:
    """One sample of the drain: the tracker's verdict and what each instance showed."""

    user: str
    status: DrainStatus
    readings: tuple[Reading, ...] = ()
    #: The clients seen using the old user after the cache wait, so far.
    legacy: LegacyReport = field(default_factory=LegacyReport)


@dataclass(frozen=True)
class Notice:
    """Something the operator should know; ``level`` is ``note`` or ``warning``."""

    message: str
    level: str = "note"


Event = PhaseStarted | PhaseFinished | DrainProgress | Notice
OnEvent = Callable[[Event], None] | None


def emit(on_event: OnEvent, event: Event) -> None:
    """Hand *event* to the caller's callback, if there is one."""
    if on_event is not None:
        on_event(event)


@dataclass(frozen=True)
class RotationResult:
    """What a call to :func:`~credflip.rotation.rotate` did."""

    id: str
    from_color: Color
    to_color: Color
    from_user: str
    to_user: str
    finished: bool
    resumed: bool
    timings: dict[str, float] = field(default_factory=dict)
    drain_seconds: float | None = None
    terminated: int = 0
    stopped_in: Phase | None = None


@dataclass(frozen=True)
class RollbackResult:
    """What a call to :func:`~credflip.rotation.rollback` did."""

    color: Color
    user: str
    flipped: bool
    unlocked: bool
