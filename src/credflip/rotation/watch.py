"""The drain's I/O shell: sample every instance, feed the pure tracker, act on its verdict.

Samples come from the fleet every ``sample_interval``; the decision is
:class:`~credflip.drain.DrainTracker`'s. What this module adds is time (the
monotonic clock, translated once from the wall-clock switch instant in the
state), the evidence kept in the state between runs, the progress events, and
what to do at a timeout or a deadline: past the drain timeout a run reports
it (exit 4, ``drain_timeout``) and keeps the old user; a scheduled run (with
a deadline) keeps sampling until its deadline first, so that the evidence
keeps growing and a later run can finish. At its deadline, past the timeout,
a scheduled run that has not finished reports ``drain_timeout`` when it saw
use (in its samples, or between the last run and this one), an instance it
could not read, or a quiet window that cannot carry over (the tracker's
``stuck``); otherwise it pauses, and the next run continues the window.
"""

from __future__ import annotations

import dataclasses
import time

from ..drain import DrainPolicy, DrainStatus, DrainTracker, Evidence, Reading, Verdict
from ..engines.base import Sessions, Step
from ..errors import CredflipError
from ..legacy import LegacyLog
from ..state import Rotation, save_state
from . import messages
from .blind import check_unwatched
from .context import Context
from .events import DrainProgress
from .terminate import terminate

__all__ = ["drain_policy", "watch", "watch_steps"]

#: Seconds between two writes of the drain's evidence to the store.
SAVE_EVERY = 30.0


def drain_policy(rot: Rotation) -> DrainPolicy:
    """The drain's policy as the rotation recorded its options."""
    return DrainPolicy(
        client_ttl=rot.client_ttl or 0.0, quiet=rot.quiet, min_drain=rot.min_drain or 0.0
    )


def watch_steps(ctx: Context, user: str) -> list[Step]:
    """The statements that make *user*'s logins countable, where the instances can count them."""
    group = ctx.state.group
    return ctx.observer.plan_watch(user, group) if ctx.fleet.can_count(user, group) else []


def watch(
    ctx: Context,
    *,
    counting: bool,
    user: str | None = None,
    since: float | None = None,
) -> bool:
    """Sample until DONE (True), the deadline (False), or the timeout (raise).

    *counting* says whether the counters attribute the old user's logins to
    it. *user* (default: the old user) and *since* (wall clock, default: the
    switch) let prepare drain a rolled-back color the same way.
    """
    opts, rot = ctx.options, ctx.rot
    old = ctx.old_user if user is None else user
    stored = Evidence.from_dict(rot.evidence)
    if stored.user != old:
        stored = Evidence()
    # Standbys count the old user's logins once replayed this far (kept across runs).
    position = (stored.position or ctx.observer.position()) if counting else None
    announce(ctx, old)
    now = time.monotonic()
    tracker = _tracker(ctx, stored, since, now)
    begin = saved = now
    timed_out: DrainStatus | None = None
    # Who uses the old user after the cache wait, continued from earlier runs.
    legacy = LegacyLog.from_list(rot.legacy)
    while True:
        readings = ctx.fleet.read(old, counting=counting, position=position)
        now = time.monotonic()
        status = _observe(ctx, tracker, legacy, now, readings, old, position)
        if now - saved >= SAVE_EVERY:
            save_state(ctx.store, ctx.layout, ctx.state)
            saved = now
        if status.verdict is Verdict.DONE:
            if status.held:
                # A replica attached meanwhile stops the retire, and so does a lock
                # taken over (the fence of this write): both before anything ends.
                check_unwatched(ctx, old)
                save_state(ctx.store, ctx.layout, ctx.state)
                terminate(ctx, readings, user=old)
            rot.drain_seconds = now - tracker.switched_at
            return True
        if status.verdict is Verdict.TIMEOUT:
            timed_out = status
            if opts.deadline is None:
                raise messages.drain_timeout(
                    old, ctx.layout.env, status, readings, now - begin, legacy.report()
                )
        if opts.deadline is not None and now + opts.sample_interval >= opts.deadline:
            # Past the timeout, use (in its samples or since the last run) or a window
            # that cannot carry over: the alarm. Else it pauses: the window goes on.
            alarm = timed_out or (status if status.used_late or status.stuck else None)
            if alarm is not None:
                raise messages.drain_timeout(
                    old, ctx.layout.env, alarm, readings, now - begin, legacy.report()
                )
            ctx.notice(messages.drain_deadline_stop())
            return False
        time.sleep(opts.sample_interval)


def _tracker(ctx: Context, stored: Evidence, since: float | None, now: float) -> DrainTracker:
    """The tracker of this run, its instants on the monotonic clock (*now* is its start)."""
    opts, rot = ctx.options, ctx.rot
    policy = drain_policy(rot)
    drain_timeout = policy.default_timeout if opts.drain_timeout is None else opts.drain_timeout
    # Persisted times are on the primary's clock; translate once, then use monotonic.
    offset = ctx.wall() - now
    start = since if since is not None else rot.switched_at
    switched = (start if start is not None else now + offset) - offset
    # A command-line run past the timeout goes on while nothing uses the old user,
    # long enough for one whole window; a scheduled one until its deadline.
    window = stored.needed_quiet(policy)
    run_until = (
        None if opts.deadline is not None else now + max(drain_timeout, policy.cache_wait + window)
    )
    return DrainTracker(
        policy,
        switched_at=switched,
        timeout_at=switched + drain_timeout,
        run_until=run_until,
        evidence=stored,
        offset=offset,
        terminate=opts.terminate,
        sessions_only=opts.accepts_sessions_only(ctx.state.sessions_only),
        proxied=ctx.rds_proxy is not None,
    )


def _observe(
    ctx: Context,
    tracker: DrainTracker,
    legacy: LegacyLog,
    now: float,
    readings: list[Reading],
    old: str,
    position: str | None,
) -> DrainStatus:
    """Feed one sample to the tracker and the legacy log; record both in the rotation
    and report the progress."""
    rot = ctx.rot
    status = tracker.observe(now, readings)
    rot.drain_gap = tracker.longest_gap
    rot.evidence = tracker.evidence(old, position).to_dict()
    # Behind RDS Proxy the old user's idle sessions are the proxy's pool, not clients.
    shown = readings if ctx.rds_proxy is None else [_busy(r) for r in readings]
    legacy.update(now + tracker.offset, shown, record=status.caches_in == 0)
    rot.legacy = legacy.to_list()
    ctx.emit(DrainProgress(old, status, tuple(readings), legacy.report()))
    return status


def _busy(reading: Reading) -> Reading:
    """*reading* without its idle sessions."""
    if reading.sessions is None:
        return reading
    groups = tuple(g for g in reading.sessions.groups if g.idle_for is None)
    return dataclasses.replace(reading, sessions=Sessions(groups))


def announce(ctx: Context, user: str) -> None:
    """Name the drain's instances and signals; warn when a short login could be missed."""
    parts = []
    for inst, sigs in ctx.fleet.signals():
        names = (
            "unreachable"
            if isinstance(sigs, CredflipError)
            else ", ".join(s.name for s in sigs if s.available) or "nothing"
        )
        parts.append(f"{inst.address} ({inst.source}) [{names}]")
    pooler = ctx.fleet.pooler
    if pooler is not None:
        parts.append(f"{pooler.label} [{', '.join(s.name for s in pooler.signals())}]")
    ctx.notice(messages.watching(user, parts))
    gaps = ctx.fleet.counter_gaps(user, ctx.state.group)
    if gaps:
        accepted = ctx.options.accepts_sessions_only(ctx.state.sessions_only)
        ctx.notice(
            messages.counter_gaps(gaps, ctx.options.sample_interval, accepted=accepted),
            level="warning",
        )
