"""The drain's I/O shell: sample every instance, feed the pure tracker, act on its verdict.

Samples come from the fleet every ``sample_interval``, each stamped when its
read began (the instances are read one after another, so the quiet a sample
shows is known only up to then); the decision is
:class:`~credflip.drain.DrainTracker`'s. What this module adds is time (the
monotonic clock, translated once from the wall-clock switch instant in the
state), the evidence kept in the state between runs, the progress events, the
retire's last look (:func:`last_look`), and what to do at a timeout or a
deadline: past the drain timeout a run reports it (exit 4, ``drain_timeout``)
and keeps the old user. A command-line run stops there at the latest once it
has sampled for its drain timeout (or, if longer, the longest window the
options ask for: two windows after a legacy client, not one its pauses
stretched); a scheduled run (with a deadline) keeps sampling until its deadline
first, so that the evidence keeps growing and a later run can finish. At its
deadline, past the timeout, a scheduled run that has not finished reports
``drain_timeout`` when it saw use (in its samples, or between the last run and
this one), an instance it could not read, or a quiet window that cannot carry
over (the tracker's ``stuck``); otherwise it pauses, and the next run
continues the window.
"""

from __future__ import annotations

import dataclasses
import time

from ..drain import DrainPolicy, DrainStatus, DrainTracker, Evidence, Reading, Verdict
from ..drain.evidence import UNCOUNTED
from ..engines.base import Step
from ..errors import CredflipError
from ..legacy import LegacyLog, LegacyReport
from ..state import Rotation, save_state
from . import messages, milestones
from .blind import check_unwatched
from .context import Context
from .events import DrainProgress
from .terminate import terminate

__all__ = ["drain_policy", "last_look", "watch", "watch_steps"]

#: Seconds between two writes of the drain's evidence to the store.
SAVE_EVERY = 30.0
#: How far a window kept in the evidence may fall short by the rounding of its instants
#: (kept to 0.01 s) when the retire's last look resumes it right after the drain's end.
KEPT_ROUNDING = 0.05


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
    stored = _stored(rot, old)
    # Standbys count the old user's logins once replayed this far (kept across runs).
    position = (stored.position or ctx.observer.position()) if counting else None
    announce(ctx, old)
    now = time.monotonic()
    tracker = _tracker(ctx, stored, since, now)
    begin = saved = now
    timed_out: DrainStatus | None = None
    # Who uses the old user after the cache wait, continued from earlier runs.
    legacy = LegacyLog.from_list(rot.legacy)
    named = bool(legacy.report())
    while True:
        # A sample's instant is when its read began: the instances are read one after
        # another, and the quiet it shows is known only up to the first of them.
        now = time.monotonic()
        readings = ctx.fleet.read(old, counting=counting, position=position)
        status = _observe(ctx, tracker, legacy, now, readings, old, position)
        named = named or _first_named(ctx, legacy.report(), old, status)
        after = time.monotonic()
        if after - saved >= SAVE_EVERY:
            save_state(ctx.store, ctx.layout, ctx.state)
            saved = after
        if status.verdict is Verdict.DONE:
            _done(ctx, status, readings, old)
            rot.drain_seconds = now - tracker.switched_at
            return True
        if status.verdict is Verdict.TIMEOUT:
            timed_out = status
            if opts.deadline is None:
                raise messages.drain_timeout(
                    old, ctx.layout.env, status, readings, after - begin, legacy.report()
                )
        if opts.deadline is not None and after + opts.sample_interval >= opts.deadline:
            # Past the timeout, use (in its samples or since the last run) or a window
            # that cannot carry over: the alarm. Else it pauses: the window goes on.
            alarm = timed_out or (status if status.used_late or status.stuck else None)
            if alarm is not None:
                raise messages.drain_timeout(
                    old, ctx.layout.env, alarm, readings, after - begin, legacy.report()
                )
            ctx.notice(messages.drain_deadline_stop())
            return False
        time.sleep(opts.sample_interval)


def _done(ctx: Context, status: DrainStatus, readings: list[Reading], old: str) -> None:
    """With ``terminate``, end the sessions idle for the whole window (locking *old* first)."""
    if status.held:
        # A replica attached meanwhile stops the retire, and so does a lock
        # taken over (the fence of this write): both before anything ends.
        check_unwatched(ctx, old)
        save_state(ctx.store, ctx.layout, ctx.state)
        terminate(ctx, readings, user=old)
        # Behind RDS Proxy or PgBouncer the sessions it ended (PgBouncer's server
        # connections too) did not close unseen: the retire's last look finds none,
        # as the evidence and the pooler now say.
        kept = Evidence.from_dict(ctx.rot.evidence)
        kept.pooled, kept.servers = {}, {}
        ctx.rot.evidence = kept.to_dict()
        if ctx.fleet.pooler is not None:
            ctx.fleet.pooler.forget(old)


def last_look(ctx: Context) -> None:
    """One last sample of the old user on every instance, right before the retire's
    statements; raise :class:`~credflip.errors.UsedAtRetire` unless it still says DONE.

    Between the drain's last sample and the retire, the phase boundary is written,
    the pointer and the replicas are checked (queries, DNS) and the retire planned.
    This is the drain's next sample: a tracker resumed from the evidence the drain
    kept, reading what it read (counters only where it did), so whatever the drain
    counts as use or unknown keeps the old user. What it saw then goes into the
    evidence and the legacy clients, and the runner takes the rotation back to the
    drain. A read, not a change: the retire's plan stays the statements it runs.
    """
    rot, old = ctx.rot, ctx.old_user
    stored = _stored(rot, old)
    # The drain read the servers' counters only when they tell the old user apart: it
    # kept a digest, not UNCOUNTED, for some server then (a pooler's are always read).
    servers = {inst.address for inst in ctx.fleet.instances}
    counting = any(v != UNCOUNTED for k, v in stored.counters.items() if k in servers)
    position = stored.position if counting else None
    now = time.monotonic()
    tracker = _tracker(ctx, stored, None, now)
    readings = ctx.fleet.read(old, counting=counting, position=position)
    status = tracker.observe(now, readings)
    # Still DONE, but for the rounding of the instants the evidence keeps.
    done = status.verdict is Verdict.QUIET and status.done_in <= KEPT_ROUNDING
    if done or status.verdict is Verdict.DONE:
        return
    rot.evidence = tracker.evidence(old, position).to_dict()
    legacy = LegacyLog.from_list(rot.legacy)
    named = bool(legacy.report())
    legacy.update(now + tracker.offset, _clients(ctx, readings))
    rot.legacy = legacy.to_list()
    if not named:
        _first_named(ctx, legacy.report(), old, status)
    raise messages.used_at_retire(old, status.reasons)


def _first_named(ctx: Context, report: LegacyReport, user: str, status: DrainStatus) -> bool:
    """Tell (once per drain: the caller asks until this is True) that the drain now names
    legacy clients, if it does."""
    if report:
        milestones.tell(ctx, "legacy_clients", legacy=report, user=user, waited=status.waited)
    return bool(report)


def _stored(rot: Rotation, user: str) -> Evidence:
    """The evidence an earlier sample of *user*'s drain kept (none for another user)."""
    stored = Evidence.from_dict(rot.evidence)
    return stored if stored.user == user else Evidence()


def _tracker(ctx: Context, stored: Evidence, since: float | None, now: float) -> DrainTracker:
    """The tracker of this run, its instants on the monotonic clock (*now* is its start)."""
    opts, rot = ctx.options, ctx.rot
    policy = drain_policy(rot)
    drain_timeout = policy.default_timeout if opts.drain_timeout is None else opts.drain_timeout
    # Persisted times are on the primary's clock; translate once, then use monotonic.
    offset = ctx.wall() - now
    start = since if since is not None else rot.switched_at
    switched = (start if start is not None else now + offset) - offset
    # A command-line run past the timeout goes on while nothing uses the old user, for
    # its drain timeout, or if longer the longest window the options ask for (two
    # windows once a legacy client was seen), so that a run after the clients left
    # finishes; not for a window their pauses stretched (hours): the evidence carries
    # that one into the next run. A scheduled run goes on until its deadline.
    longest = policy.cache_wait + policy.needed_quiet(0.0, legacy=True)
    run_until = None if opts.deadline is not None else now + max(drain_timeout, longest)
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
    legacy.update(now + tracker.offset, _clients(ctx, readings), record=tracker.settled)
    rot.legacy = legacy.to_list()
    ctx.emit(DrainProgress(old, status, tuple(readings), legacy.report()))
    return status


def _clients(ctx: Context, readings: list[Reading]) -> list[Reading]:
    """*readings* as the legacy log sees them: behind RDS Proxy the old user's idle
    sessions are the proxy's pool, not clients."""
    return readings if ctx.rds_proxy is None else [_busy(r) for r in readings]


def _busy(reading: Reading) -> Reading:
    """*reading* without its idle sessions."""
    if reading.sessions is None:
        return reading
    return dataclasses.replace(reading, sessions=reading.sessions.busy())


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
    gaps = ctx.counter_gaps(user)
    if gaps:
        accepted = ctx.options.accepts_sessions_only(ctx.state.sessions_only)
        ctx.notice(
            messages.counter_gaps(gaps, ctx.options.sample_interval, accepted=accepted),
            level="warning",
        )
