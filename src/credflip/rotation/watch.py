"""The drain's I/O shell: sample every instance, feed the pure tracker, act on its verdict.

Samples come from the fleet every ``sample_interval``; the decision is
:class:`~credflip.drain.DrainTracker`'s. What this module adds is time (the
monotonic clock, translated once from the wall-clock switch instant in the
state), the progress events, and what to do at a timeout or a deadline.
"""

from __future__ import annotations

import time

from ..drain import DrainPolicy, DrainTracker, Verdict
from ..errors import CredflipError
from . import messages
from .context import Context
from .events import DrainProgress
from .terminate import terminate

__all__ = ["watch"]


def watch(ctx: Context, *, counting: bool) -> bool:
    """Sample until DONE (True), the deadline (False), or the timeout (raise or terminate).

    *counting* says whether the counters attribute the old user's logins to it.
    """
    opts, rot = ctx.options, ctx.rot
    old = ctx.old_user
    # Standbys count the old user's logins once they replayed this far.
    position = ctx.engine.position() if counting else None
    announce(ctx)
    now = time.monotonic()
    # Persisted times are wall-clock; translate once, then use monotonic.
    switched = now - max(0.0, time.time() - (rot.switched_at or time.time()))
    policy = DrainPolicy(client_ttl=rot.client_ttl or 0.0, min_drain=rot.min_drain or 0.0)
    tracker = DrainTracker(
        policy,
        switched_at=switched,
        timeout_at=now + (opts.drain_timeout or 900.0),
        longest_gap=rot.drain_gap,
    )
    begin = now
    while True:
        readings = ctx.fleet.read(old, counting=counting, position=position)
        now = time.monotonic()
        status = tracker.observe(now, readings)
        rot.drain_gap = tracker.longest_gap
        ctx.emit(DrainProgress(old, status, tuple(readings)))
        if status.verdict is Verdict.DONE:
            rot.drain_seconds = now - switched
            return True
        if status.verdict is Verdict.TIMEOUT:
            if not opts.terminate:
                rot.drain_seconds = None
                raise messages.drain_timeout(old, ctx.layout.env, status, readings, now - begin)
            terminate(ctx, readings)
            rot.drain_seconds = time.monotonic() - switched
            return True
        if opts.deadline is not None and now + opts.sample_interval >= opts.deadline:
            ctx.notice(messages.drain_deadline_stop())
            return False
        time.sleep(opts.sample_interval)


def announce(ctx: Context) -> None:
    """Name the drain's instances and signals; warn when a short login could be missed."""
    parts = []
    for inst, sigs in ctx.fleet.signals():
        names = (
            "unreachable"
            if isinstance(sigs, CredflipError)
            else ", ".join(s.name for s in sigs if s.available) or "nothing"
        )
        parts.append(f"{inst.address} ({inst.source}) [{names}]")
    ctx.notice(messages.watching(ctx.old_user, parts))
    gaps = ctx.fleet.counter_gaps(ctx.old_user, ctx.state.group)
    if gaps:
        accepted = ctx.options.accepts_sessions_only(ctx.state.sessions_only)
        ctx.notice(
            messages.counter_gaps(gaps, ctx.options.sample_interval, accepted=accepted),
            level="warning",
        )
