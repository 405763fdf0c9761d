"""What a rotation tells its caller while it runs, and what a call returns.

The rotation prints nothing: the CLI renders these events, the Lambda logs
them, tests collect them. A :class:`Milestone` is a moment others may subscribe
to (:mod:`credflip.events` sends them to EventBridge); the rest is progress.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..actor import Actor
from ..drain import DrainStatus, Reading
from ..layout import Color
from ..legacy import LegacyReport
from ..state import Phase

__all__ = [
    "DrainProgress",
    "Event",
    "Milestone",
    "MilestoneKind",
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


MilestoneKind = Literal[
    "started",
    "switched",
    "legacy_clients",
    "drain_timeout",
    "done",
    "failed",
    "halted",
    "rolled_back",
]


@dataclass(frozen=True)
class Milestone:
    """One moment of an env's rotation others may want to know of: a new rotation
    started, the pointer switched, the drain first named legacy clients, the drain timed
    out (once per rotation), the rotation finished, a run failed, the env halted, a
    rollback. Never a secret: *reason* is scrubbed of the run's passwords."""

    kind: MilestoneKind
    env: str
    prefix: str
    #: The rotation's id (None: a run refused before it recorded one).
    rotation_id: str | None = None
    from_color: Color | None = None
    to_color: Color | None = None
    from_user: str | None = None
    to_user: str | None = None
    #: Where the rotation is (or was, when it failed or was rolled back).
    phase: Phase | None = None
    #: Wall clock: when the rotation started.
    started_at: float | None = None
    #: Seconds spent in each phase so far (across runs).
    timings: Mapping[str, float] = field(default_factory=dict)
    #: Why (a failure, a timeout, a halt), one line.
    reason: str | None = None
    #: Who runs this call.
    actor: Actor | None = None
    #: The clients seen using the old user after the cache wait, so far.
    legacy: LegacyReport = field(default_factory=LegacyReport)
    #: What a kind adds (``drain_seconds``, ``failures``, ``flipped``...), JSON-ready.
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: This milestone's own id: a send tried twice (its first reply lost) may deliver
    #: two events, and a consumer tells the copy by it.
    id: str = field(default_factory=lambda: secrets.token_hex(8), compare=False)


Event = PhaseStarted | PhaseFinished | DrainProgress | Notice | Milestone
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
