"""The milestones of a rotation (:class:`~.events.Milestone`), told where they happen.

The rotation hands them to its ``on_event`` callback like any progress event and
knows nothing of where they go (:mod:`credflip.events` sends them to EventBridge):

- ``started`` — a new rotation was recorded (not a resumed one);
- ``switched`` — the pointer names the new color;
- ``legacy_clients`` — the drain named its first legacy clients (once per drain: the
  rotation's record keeps them, so a resumed drain that already named some says nothing);
- ``drain_timeout`` — a run ended in a drain timeout, once per rotation: a later run that
  times out again while the record still says so (each scheduled invocation of a stuck
  drain) tells nothing new;
- ``done``, ``failed`` (a run that took the lock and ended in an error: what halting
  counts), ``halted`` (that failure halted the env) and ``rolled_back``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..actor import Actor
from ..durations import iso_utc
from ..errors import DrainTimeout
from ..halt import NOT_FAILURES, Halt
from ..layout import Color, Layout
from ..legacy import LegacyLog, LegacyReport
from ..state import Phase, Rotation, State
from ..urls import scrubbed_line
from .context import Context
from .events import Milestone, MilestoneKind, OnEvent, emit

__all__ = ["RunReport", "done", "reporting", "rolled_back", "tell"]

#: Characters kept of a reason (a failure's message names what to do; it stays whole).
REASON_CHARS = 1000


def one_line(text: str, secrets: list[str]) -> str:
    """*text* scrubbed of *secrets*, on one line, cut at a word past :data:`REASON_CHARS`."""
    return scrubbed_line(text, secrets, REASON_CHARS)


def of_rotation(
    layout: Layout,
    state: State | None,
    kind: MilestoneKind,
    actor: Actor | None,
    *,
    phase: Phase | None = None,
    reason: str | None = None,
    legacy: LegacyReport | None = None,
    **extra: Any,
) -> Milestone:
    """*kind* for the env's rotation under way in *state* (or for the env alone), in
    *phase* (default: the phase its record names)."""
    rot = state.current if state is not None else None
    if state is None or rot is None:
        return Milestone(kind, layout.env, layout.prefix, reason=reason, actor=actor, extra=extra)
    return Milestone(
        kind,
        layout.env,
        layout.prefix,
        rotation_id=rot.id,
        from_color=rot.from_color,
        to_color=rot.to_color,
        from_user=state.users.get(rot.from_color),
        to_user=state.users.get(rot.to_color),
        phase=phase or rot.phase,
        started_at=rot.started_at,
        timings=dict(rot.timings),
        reason=reason,
        actor=actor,
        legacy=legacy if legacy is not None else LegacyReport(),
        extra=extra,
    )


def tell(ctx: Context, kind: MilestoneKind, **fields: Any) -> None:
    """Hand the milestone *kind* of *ctx*'s rotation to the caller."""
    ctx.emit(of_rotation(ctx.layout, ctx.state, kind, ctx.actor, **fields))


def done(ctx: Context) -> None:
    """The rotation finished: how long the drain took, the sessions it ended, the legacy
    clients it saw."""
    rot = ctx.rot
    tell(
        ctx,
        "done",
        legacy=legacy_of(rot),
        drain_seconds=rot.drain_seconds,
        terminated=rot.terminated,
    )


def legacy_of(rot: Rotation | None) -> LegacyReport:
    """The legacy clients the rotation's record names."""
    return LegacyLog.from_list(rot.legacy).report() if rot is not None else LegacyReport()


class RunReport:
    """The milestones that end one rotate run: a failure, a drain timeout, a halt."""

    def __init__(self, layout: Layout, on_event: OnEvent, actor: Actor | None) -> None:
        self.layout = layout
        self.on_event = on_event
        self.actor = actor
        self.ctx: Context | None = None
        #: The record already said the drain timed out when this run began.
        self.timed_out = False

    def begun(self, ctx: Context) -> None:
        """The run read the env's state: milestones from now on name its rotation."""
        self.ctx = ctx
        self.timed_out = ctx.state.current is not None and (
            ctx.state.current.error_kind == "drain_timeout"
        )

    def _milestone(self, kind: MilestoneKind, **fields: Any) -> Milestone:
        state = self.ctx.state if self.ctx is not None else None
        return of_rotation(self.layout, state, kind, self.actor, **fields)

    def ended(self, exc: BaseException) -> None:
        """The run raised *exc*: a failure (what halting counts) or a first drain timeout."""
        if not isinstance(exc, Exception) or isinstance(exc, NOT_FAILURES):
            return
        timeout = isinstance(exc, DrainTimeout)
        if timeout and self.timed_out:
            return  # told when the drain first timed out
        ctx = self.ctx
        milestone = self._milestone(
            "drain_timeout" if timeout else "failed",
            phase=ctx.running if ctx is not None else None,
            reason=one_line(str(exc), ctx.secrets if ctx is not None else []) or type(exc).__name__,
            legacy=legacy_of(ctx.state.current if ctx is not None else None),
            error=type(exc).__name__,
        )
        emit(self.on_event, milestone)

    def halted(self, halt: Halt) -> None:
        """The run's failure halted the env."""
        milestone = self._milestone(
            "halted",
            phase=self.ctx.running if self.ctx is not None else None,
            reason=halt.reason,
            failures=halt.failures,
            since=iso_utc(halt.since),
        )
        emit(self.on_event, milestone)


@contextlib.contextmanager
def reporting(report: RunReport) -> Iterator[RunReport]:
    """Around one rotate run (inside its failure count, so that ``failed`` comes before
    ``halted``): tell how it ended, when it failed or its drain first timed out."""
    try:
        yield report
    except BaseException as exc:
        report.ended(exc)
        raise


def rolled_back(
    layout: Layout,
    state: State,
    on_event: OnEvent,
    actor: Actor,
    *,
    rotation: Rotation | None,
    back: Color,
    away: Color,
    flipped: bool,
    unlocked: bool,
    finished: str | None = None,
) -> None:
    """Tell that the env went back to *back* (after *state* recorded it in its history):
    from the *rotation* under way, or from the one that had *finished* (its id)."""
    entry = state.history[-1]
    extra: dict[str, Any] = {"flipped": flipped, "unlocked": unlocked, "switched": entry.switched}
    if finished is not None:
        extra["rolled_back_rotation"] = finished
    emit(
        on_event,
        Milestone(
            "rolled_back",
            layout.env,
            layout.prefix,
            rotation_id=entry.id,
            from_color=away,
            to_color=back,
            from_user=state.users.get(away),
            to_user=state.users.get(back),
            phase=rotation.phase if rotation is not None else Phase.DONE,
            started_at=entry.started_at,
            timings=dict(rotation.timings) if rotation is not None else {},
            actor=actor,
            legacy=legacy_of(rotation),
            extra=extra,
        ),
    )
