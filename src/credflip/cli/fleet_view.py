"""What ``status --all`` prints: one line per env, then what is wrong, which windows are
closed and who still lingers."""

from __future__ import annotations

import time

from .. import commands
from ..commands import EnvRow, FleetStatus
from ..durations import format_duration
from .render import out, print_columns
from .schedule_cmd import window_state

__all__ = ["age", "health", "print_fleet"]


def age(seconds: float) -> str:
    """A span for a table: ``850ms``, ``4m05s``, ``3h02m``, ``29d23h``."""
    seconds = max(0.0, seconds)
    if seconds < 48 * 3600:
        return format_duration(seconds)
    hours = round(seconds / 3600)
    return f"{hours // 24}d{hours % 24:02d}h"


def health(row: EnvRow) -> str:
    """``ok``, or what is wrong in a word or two: ``halted``, ``drain timeout``, ``failing``
    (its last run failed; ``failing (2)``: so did the one before, counting towards a
    halt), ``damaged``."""
    if row.healthy:
        return "ok"
    if row.halt is not None:
        return "halted"
    if row.phase == "damaged":
        return "damaged"
    rot = row.rotation
    if rot is not None and rot.error_kind == "drain_timeout":
        return "drain timeout"
    return f"failing ({row.failures})" if row.failures else "failing"


def print_fleet(fleet: FleetStatus) -> None:
    """The table of every env, then one line per problem and per env's legacy clients."""
    now = fleet.checked_at
    sick = [row for row in fleet.envs if not row.healthy]
    out.print(
        f"{len(fleet.envs)} env(s) under {fleet.prefix} in {fleet.store}, {len(sick)} unhealthy, "
        f"at {commands.describe_time(now)}"
    )
    if not fleet.envs:
        out.print(f"no env under {fleet.prefix}: check --prefix and --store")
        return
    header = (
        *("ENV", "PHASE", "ACTIVE", "LAST ROTATION", "NEXT DUE"),
        *("WINDOW", "DRAIN", "LOCK", "HEALTH"),
    )
    rows = [
        (
            row.env,
            _phase(row),
            f"{row.active} {row.active_user}" if row.active else "-",
            _last(row, now),
            _due(row, now, fleet.min_interval),
            _window(row, now),
            _drain(row, now),
            _lock(row, now),
            health(row),
        )
        for row in fleet.envs
    ]
    print_columns(header, rows)
    for row in sick:
        for problem in row.problems:
            out.print(f"{row.env}: {problem}")
    for row in fleet.envs:
        if row.window is not None and row.window["open"] is False:
            spec = row.window["spec"]
            out.print(f"{row.env}: rotation window {spec} ({window_state(spec, now)})")
        if row.drain is not None and row.drain.legacy:
            out.print(f"{row.env}: legacy clients of {row.drain.user}: {row.drain.legacy.names()}")


def _phase(row: EnvRow) -> str:
    rot = row.rotation
    if row.phase == "paused" and rot is not None:
        return f"paused in {rot.phase}"
    return row.phase


def _last(row: EnvRow, now: float) -> str:
    last = row.last
    if last is None:
        return "never"
    when = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(last.finished_at))
    who = f", by {last.by.short()}" if last.by else ""
    return f"{last.result} {when}, {age(now - last.finished_at)} ago{who}"


def _due(row: EnvRow, now: float, min_interval: float | None) -> str:
    if row.halt is not None or row.phase in ("unmanaged", "damaged"):
        return "-"
    if row.rotation is not None:
        return "under way"
    if row.next_due is None or min_interval is None:
        return "-"
    return "now" if row.next_due <= now else f"in {age(row.next_due - now)}"


def _window(row: EnvRow, now: float) -> str:
    """``-`` (none), ``open``, ``opens in 3h00m``, or ``closed`` (nothing opens within eight
    days), ``unreadable`` (a spec this credflip does not read)."""
    view = row.window
    if view is None:
        return "-"
    if view["open"] is None:
        return "unreadable"
    opening = view["next_opening"]
    if view["open"] or opening is None:
        return "open" if view["open"] else "closed"
    return f"opens in {age(opening - now)}"


def _drain(row: EnvRow, now: float) -> str:
    drain = row.drain
    if drain is None:
        return "-"
    text = drain.waiting
    if drain.earliest_retire is not None and drain.earliest_retire > now:
        text += f", retire in ≥ {age(drain.earliest_retire - now)}"
    if drain.legacy:
        noun = "legacy client" if drain.legacy.count == 1 else "legacy clients"
        text += f", {drain.legacy.count} {noun}"
    return text


def _lock(row: EnvRow, now: float) -> str:
    lock = row.lock
    if lock is None:
        return "free"
    text = f"{lock.owner}@{lock.host} pid {lock.pid}, {age(now - lock.started_at)}"
    return f"stale: {text}" if row.lock_stale else text
