"""The phase loop: the table of phases, the retry policy, and where a run stops.

Phases run in the order of :data:`HANDLERS` from the one recorded in the
state. A phase that fails with an error the :class:`RetryPolicy` retries
(the database went away: a restart, a failover) runs again after a pause;
any other error is recorded and raised. The plans one try of a phase runs
share one lock budget (:meth:`~credflip.engines.plans.PlanRunner.lock_phase`).
A phase that returns False stops the run resumably (a Lambda's deadline), and
so does a wait inside a phase that the deadline cuts short
(:class:`~credflip.errors.DeadlineReached`). A retire whose last look saw the
old user in use (:class:`~credflip.errors.UsedAtRetire`) sends the rotation
back to the drain, in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn, TypeVar

from ..backoff import Backoff
from ..durations import iso_utc
from ..errors import CredflipError, DatabaseUnavailable, DeadlineReached, UsedAtRetire
from ..state import Phase
from . import messages, milestones
from .context import Context
from .events import PhaseFinished, PhaseStarted, RotationResult
from .journal import Journal
from .phases import PhaseHandler, drain, prepare, retire, switch, verify

__all__ = ["HANDLERS", "RetryPolicy", "run_phases"]

T = TypeVar("T")

#: Every phase before DONE, in order, and what runs it.
HANDLERS: Mapping[Phase, PhaseHandler] = MappingProxyType(
    {
        Phase.PREPARE: prepare.HANDLER,
        Phase.VERIFY: verify.HANDLER,
        Phase.SWITCH: switch.HANDLER,
        Phase.DRAIN: drain.HANDLER,
        Phase.RETIRE: retire.HANDLER,
    }
)


@dataclass
class RetryPolicy:
    """Which failures a phase is tried again after, and how long to wait before it.

    The database going away (:class:`DatabaseUnavailable`) is waited out
    within ``backoff``'s budget (``--reconnect-timeout``) and the caller's
    *deadline*; anything else stops the run.
    """

    backoff: Backoff
    deadline: float | None = None
    retryable: tuple[type[CredflipError], ...] = field(default=(DatabaseUnavailable,))

    def delay(self, exc: CredflipError) -> float | None:
        """Seconds to wait before trying again after *exc*, or None to stop."""
        if not isinstance(exc, self.retryable):
            return None
        return self.backoff.next_delay(deadline=self.deadline)

    def left(self) -> float:
        """Seconds of the retry budget not yet spent."""
        return self.backoff.left()

    def deadline_stops(self, exc: CredflipError) -> bool:
        """*exc* would be tried again but for the deadline: a resumable stop, no failure
        (a Lambda that meets a frozen database pauses; it is not a failed rotation)."""
        return isinstance(exc, self.retryable) and self.deadline is not None and self.left() > 0

    def call(
        self,
        func: Callable[[], T],
        notice: Callable[[CredflipError, float, float], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """*func()*, tried again after each failure this policy retries (each told to
        *notice* with the delay and the budget left); the last failure is raised."""
        while True:
            try:
                value = func()
            except CredflipError as exc:
                delay = self.delay(exc)
                if delay is None:
                    raise
                notice(exc, delay, self.left())
                sleep(delay)
                continue
            self.succeeded()
            return value

    def succeeded(self) -> None:
        """A phase got through: the next failure starts a fresh budget."""
        self.backoff.reset()


def run_phases(
    ctx: Context,
    journal: Journal,
    *,
    resumed: bool,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RotationResult:
    """Run phases from the recorded one until DONE or a safe stop."""
    opts = ctx.options
    policy = policy or RetryPolicy(Backoff(opts.reconnect_timeout), deadline=opts.deadline)
    first = True
    while True:
        rot, deadline = ctx.rot, opts.deadline
        phase = rot.phase
        if deadline is not None and phase is not Phase.DONE and time.monotonic() >= deadline:
            ctx.notice(messages.deadline_stop(phase))
            return result(ctx, finished=False, resumed=resumed, stopped_in=phase)
        ctx.emit(
            PhaseStarted(phase, rot.id, rot.from_color, rot.to_color, resumed=resumed and first)
        )
        first = False
        ctx.running = phase
        started = time.monotonic()
        try:
            # The plans of one try of a phase share its lock budget.
            with ctx.admin.lock_phase():
                ctx.settle_leases()
                finished = journal.finish() if phase is Phase.DONE else HANDLERS[phase].run(ctx)
        except DeadlineReached as exc:
            ctx.notice(messages.deadline_in(phase, exc))
            finished = False
        except UsedAtRetire as exc:
            # The last look before the retire saw use: the old user keeps its login,
            # and this run drains again.
            ctx.notice(str(exc), level="warning")
            journal.spent(phase, time.monotonic() - started)
            journal.back_to(Phase.DRAIN)
            continue
        except CredflipError as exc:
            if _waited_to_retry(ctx, journal, policy, phase, exc, sleep):
                continue
            finished = False  # the deadline stopped it: resumable
        policy.succeeded()
        elapsed = time.monotonic() - started
        journal.spent(phase, elapsed)
        if phase is Phase.DONE:
            ctx.emit(PhaseFinished(phase, elapsed))
            milestones.done(ctx)
            return result(ctx, finished=True, resumed=resumed)
        if not finished:
            journal.save()
            return result(ctx, finished=False, resumed=resumed, stopped_in=phase)
        journal.advance(phase)
        ctx.emit(PhaseFinished(phase, elapsed))
        if phase is Phase.SWITCH:
            milestones.tell(ctx, "switched", phase=phase, switched_at=iso_utc(ctx.rot.switched_at))


def _waited_to_retry(
    ctx: Context,
    journal: Journal,
    policy: RetryPolicy,
    phase: Phase,
    exc: CredflipError,
    sleep: Callable[[float], None],
) -> bool:
    """True once it waited to try *phase* again after *exc*; False when only the
    deadline keeps it from that (a resumable stop); otherwise records the failure and
    raises."""
    delay = policy.delay(exc)
    if delay is not None:
        ctx.notice(messages.retrying(phase, exc, delay, policy.left()), level="warning")
        sleep(delay)
        return True
    if not policy.deadline_stops(exc):
        _stop(ctx, journal, phase, exc)
    ctx.notice(messages.deadline_in(phase, exc))
    return False


def _stop(ctx: Context, journal: Journal, phase: Phase, exc: CredflipError) -> NoReturn:
    """Record the failure of *phase* and raise it (the database's, said with where to go on)."""
    raised: CredflipError = exc
    if isinstance(exc, DatabaseUnavailable):
        pointer = ctx.rot.to_color if phase.switched else ctx.rot.from_color
        raised = messages.stopped(phase, exc, pointer, ctx.layout.env)
    journal.failed(phase, raised, hide=ctx.secrets, redo_prepare=ctx.redo_prepare)
    if raised is exc:
        raise exc
    raise raised from exc


def result(
    ctx: Context, *, finished: bool, resumed: bool, stopped_in: Phase | None = None
) -> RotationResult:
    """What this call did."""
    rot = ctx.rot
    return RotationResult(
        id=rot.id,
        from_color=rot.from_color,
        to_color=rot.to_color,
        from_user=ctx.old_user,
        to_user=ctx.new_user,
        finished=finished,
        resumed=resumed,
        timings=dict(rot.timings),
        drain_seconds=rot.drain_seconds,
        terminated=rot.terminated,
        stopped_in=stopped_in,
    )
