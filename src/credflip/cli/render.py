"""What the commands print: results, tables, the dry-run plan, the drain view, history.

``out`` and ``err`` are the command line's only consoles: results go to
``out``, progress, warnings and errors to ``err``. URLs print masked
(``DbUrl`` hides its password); only ``resolve --show-secrets`` passes
passwords in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import commands
from ..durations import format_duration
from ..layout import Color, Layout
from ..legacy import LegacyReport
from ..lock import LockInfo
from ..rotation import RotationPlan, RotationResult
from ..state import HistoryEntry
from ..urls import DbUrl

# markup=False, emoji=False: user names, URLs, ARNs (":secret:") and server messages must
# print as they are.
out = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """``--json``: *data* as JSON on standard output."""
    out.print_json(json.dumps(data))


# -- init ----------------------------------------------------------------


def print_init(
    result: commands.InitResult,
    layout: Layout,
    store_url: str,
    *,
    saved_admin: DbUrl | None,
    next_step: str,
    pooler: DbUrl | None = None,
) -> None:
    """What ``init`` set up, what the drain sees, and the ``next:`` line."""
    how = "adopted the existing blue/green setup" if result.adopted else "initialised"
    out.print(f"env {layout.env}: {how} in {store_url}")
    for color, user in result.users.items():
        mark = " (active)" if color is result.active else ""
        out.print(f"  {color.value:<5} = {user}{mark}")
    if result.group:
        out.print(f"  group role {result.group} owns the objects; both users log in as it")
    for line in result.enabled:
        out.print(f"  {line}")
    if saved_admin is not None:
        out.print(f"  admin URL stored in {layout.admin_url} ({saved_admin})")
    if pooler is not None:
        out.print(f"  PgBouncer console stored in {layout.pooler_url} ({pooler})")
    if result.rds_proxy:
        names = ", ".join(result.proxy_secrets[c] for c in sorted(result.proxy_secrets))
        out.print(
            f"  behind RDS Proxy {result.rds_proxy}: it logs in with secrets {names} (both in "
            f"its Auth list); the drain goes by counters, not by the proxy's idle sessions"
        )
    print_drain_view(result.instances, result.counter_gaps, result.unwatched)
    out.print("  " + sessions_only_line(result.sessions_only, bool(result.counter_gaps)))
    out.print(next_step)


def sessions_only_line(stored: bool, gaps: bool) -> str:
    """What the env's drain does where an instance counts no logins."""
    if stored:
        return (
            "sessions only: stored for this env (init --sessions-only): where an instance counts "
            "no logins the drain relies on open sessions alone; rotate --require-counters "
            "revokes it"
        )
    if gaps:
        return (
            "rotate refuses until every instance counts logins: enable the counter above, or "
            "accept the risk with rotate --sessions-only"
        )
    return "sessions only: no (rotate refuses where an instance counts no logins)"


def print_drain_view(
    instances: list[commands.InstanceStatus], gaps: list[str], unwatched: Sequence[str] = ()
) -> None:
    """What the drain sees on each instance, and how to close a gap."""
    out.print("drain signals:")
    for inst in instances:
        if inst.reachable is False:
            out.print(f"  {inst.address} ({inst.source}): unreachable: {inst.error}")
            continue
        have = ", ".join(s.name for s in inst.signals if s.available) or "-"
        role = "" if inst.role is None else f" {inst.role}"
        out.print(f"  {inst.address} ({inst.source}{role}): {have}")
        for sig in inst.signals:
            if not sig.available:
                out.print(f"    missing {sig.name}: {sig.detail}")
    if gaps:
        out.print(
            "  no login counter for: " + "; ".join(gaps) + " — a login shorter than one drain "
            "sample can be missed (see 'What the drain can see' in the README)"
        )
    for phrase in unwatched:
        out.print(f"  blind spot of the drain (blocks the retire): {phrase}")


# -- rotate / rollback ---------------------------------------------------------


#: What the retire does before its statements (rotation/watch.py's last_look).
LAST_LOOK = (
    "one last reading of every instance, as the drain reads them (any use there: back to the drain)"
)


def print_plan(plan: RotationPlan) -> None:
    """``rotate --dry-run``: what the rotation would do, in its order."""

    def sql(steps: list[tuple[str, str]]) -> None:
        where = plan.main_database
        for database, text in steps:
            if (database or plan.main_database) != where:
                where = database or plan.main_database
                out.print(f"    -- in database {where}")
            out.print(f"    {text};")
        if not steps:
            out.print("    (nothing)")

    out.print(
        f"dry run of the next rotation of env {plan.env}: {plan.from_color} ({plan.from_user}) → "
        f"{plan.to_color} ({plan.to_user}); nothing was changed and no lock taken"
    )
    if plan.lease is not None:
        out.print(f"0. first take back what a run that died lent the admin ({plan.lease}): SQL")
        sql(plan.take_back)
    first = plan.predrain
    if first is not None:
        out.print(
            f"1. prepare: first drain {first.user!r} ({first.color}) like an old user: the last "
            f"rotation moved clients to it and was rolled back at "
            f"{commands.describe_time(first.since)}; no use on any instance for the quiet "
            f"window {format_duration(first.window)}, at the earliest "
            f"{format_duration(first.earliest_after)} after the rollback"
        )
        out.print("   SQL when that drain starts:")
        sql(first.watch)
        out.print("   then SQL, in order")
    else:
        out.print("1. prepare: SQL, in order")
    sql(plan.prepare)
    out.print("   parameters written:")
    for param in plan.parameters:
        out.print(f"    {param.name}  {param.kind}  {param.value}  ({param.when})")
    out.print("2. verify: log in with " + "; ".join(plan.verify))
    out.print(f"3. switch: {plan.parameters[-1].name} = {plan.to_color}")
    _print_drain_plan(plan, sql)
    notes = "".join(f"{note}, then " for note in (LAST_LOOK, *plan.retire_notes))
    out.print(f"5. retire ({plan.retire_mode}): {notes}SQL")
    sql(plan.retire)


def _print_drain_plan(plan: RotationPlan, sql: Callable[[list[tuple[str, str]]], None]) -> None:
    """The dry run's drain: how long, what it watches, the SQL that starts it."""
    out.print(
        f"4. drain: watch {plan.from_user!r} for client TTL {format_duration(plan.client_ttl)}, "
        f"then no use on any instance for the quiet window {format_duration(plan.quiet)} "
        f"(longer when clients come back after a pause); --min-drain "
        f"{format_duration(plan.min_drain)}; at the earliest "
        f"{format_duration(plan.earliest_retire_after)} after the switch; timeout "
        f"{format_duration(plan.drain_timeout)} after the switch"
    )
    for address, source, signals in plan.instances:
        out.print(f"    {address} ({source}): {', '.join(signals) or 'no signal'}")
    for gap in plan.counter_gaps:
        out.print(f"    no login counter: {gap}")
    for note in plan.unwatched:
        out.print(f"    {note}")
    if plan.counter_gaps and plan.sessions_only:
        out.print("    draining on open sessions alone there: a risk accepted with --sessions-only")
    out.print("   SQL when the drain starts:")
    sql(plan.watch)


def print_result(result: RotationResult) -> None:
    """A rotation's phases with their times, and what it did."""
    table = Table(title=f"rotation {result.id}", title_justify="left", show_edge=False)
    table.add_column("phase")
    table.add_column("time", justify="right")
    for phase, seconds in result.timings.items():
        table.add_row(phase, format_duration(seconds))
    out.print(table)
    line = (
        f"{result.from_color} ({result.from_user}) → {result.to_color} ({result.to_user}): "
        f"{'done' if result.finished else 'paused'}"
    )
    if result.drain_seconds is not None:
        line += f", drained in {format_duration(result.drain_seconds)}"
    if result.terminated:
        line += f", {result.terminated} session(s) terminated"
    out.print(line)


def print_rollback(*, color: Color, user: str, flipped: bool) -> None:
    """Where a rollback left the pointer."""
    if flipped:
        out.print(f"pointer back on {color} ({user})")
    else:
        out.print(f"rotation abandoned before the switch; {color} ({user}) active")


# -- status / resolve / history ------------------------------------------------


def print_status(report: commands.Status, *, has_admin: bool, schedule: Sequence[str] = ()) -> None:
    """``status`` as text: colors, instances, the rotation, the lock, the last rotations;
    *schedule*'s lines (a halt, the window) right under the first."""
    out.print(f"env {report.env} ({report.engine}) in {report.store}: active {report.active}")
    for line in schedule:
        out.print(line)
    _print_colors(report)
    if not has_admin:
        out.print("(no admin URL: user state and sessions not shown)")
    if report.database_error:
        out.print(f"database: {report.database_error}")
    if has_admin and not report.database_error:
        _print_instances(report)
    out.print(sessions_only_line(report.sessions_only, bool(report.counter_gaps)))
    if report.rds_proxy is not None:
        out.print(
            f"behind RDS Proxy {report.rds_proxy.name} at {report.rds_proxy.endpoint}: it logs "
            f"in with {', '.join(report.proxy_secrets)}; the drain goes by counters and by what "
            f"the old user's sessions run, not by the proxy's idle sessions"
        )
    _print_rotation(report)
    out.print(f"lock: {report.lock.describe() if report.lock else 'free'}")
    if report.lease is not None:
        out.print(
            f"lease: {report.lease.describe()}, not taken back (a run died before it could): "
            f"the next init, rotate or rollback takes it back first"
        )
    if report.history:
        print_history(report.history, title="last rotations")


def _print_colors(report: commands.Status) -> None:
    table = Table(show_edge=False)
    for col in ("color", "user", "active", "exists", "login", "sessions", "writer URL"):
        table.add_column(col)
    for c in report.colors:
        state = c.user_state
        table.add_row(
            c.color.value,
            c.user,
            "yes" if c.active else "",
            "?" if state is None else ("yes" if state.exists else "no"),
            "?" if state is None else ("yes" if state.can_login else "locked"),
            "?" if c.sessions is None else f"{c.sessions.count}",
            str(c.writer_url) if c.writer_url else "-",
        )
    out.print(table)


def _print_instances(report: commands.Status) -> None:
    table = Table(title="instances", title_justify="left", show_edge=False)
    for col in ("instance", "from", "role", *(c.color.value for c in report.colors), "signals"):
        table.add_column(col)
    for inst in report.instances:
        if inst.reachable is False:
            table.add_row(inst.address, inst.source, "unreachable", "?", "?", inst.error or "")
            continue
        table.add_row(
            inst.address,
            inst.source,
            inst.role or "primary",
            *(str(inst.sessions[c.color].count) for c in report.colors),
            ", ".join(s.name for s in inst.signals if s.available),
        )
    out.print(table)
    if report.counter_gaps:
        out.print("no login counter: " + "; ".join(report.counter_gaps))
    for phrase in report.unwatched:
        out.print(f"blind spot of the drain (blocks the retire): {phrase}")


def _print_rotation(report: commands.Status) -> None:
    rot = report.rotation
    if not rot:
        out.print("no rotation under way")
        return
    out.print(
        f"rotation {rot.id}: {rot.from_color} → {rot.to_color}, phase {rot.phase}"
        + (f", last error: {rot.error}" if rot.error else "")
    )
    if report.earliest_retire is not None:
        out.print(
            f"the old user is retired at the earliest at "
            f"{commands.describe_time(report.earliest_retire)}, once it shows no use"
        )
    who = "the old user"
    if rot.predraining and rot.predrain_since is not None:
        who = f"{report.legacy_user!r} ({rot.to_color})"
        out.print(
            f"draining {who} before its password changes: it was active until "
            f"{commands.describe_time(rot.predrain_since)} (a rollback)"
        )
    _print_legacy(report.legacy, who)


def _print_legacy(legacy: LegacyReport, who: str) -> None:
    """The clients that still used *who* after the cache wait, one line each."""
    if not legacy:
        return
    noun = "client" if legacy.count == 1 else "clients"
    out.print(f"{legacy.count} legacy {noun} used {who} after the cache wait:")
    for c in legacy.clients:
        seen = (
            f"seen {commands.describe_time(c.first_seen)} to {commands.describe_time(c.last_seen)}"
        )
        if c.sessions:
            seen += f", up to {c.sessions} session(s)"
        if c.started is not None:
            seen += f", the oldest open since {commands.describe_time(c.started)}"
        out.print(f"  {c.name} ({seen})")
        for query, calls in c.statements:
            out.print(f"    {calls} x {query}")
    if legacy.count > len(legacy.clients):
        out.print(f"  and {legacy.count - len(legacy.clients)} more not listed")


def print_resolved(data: dict[str, str]) -> None:
    """``resolve`` as text: one ``key: value`` line each."""
    for key in ("env", "color", "writer_url", "reader_url"):
        out.print(f"{key}: {data[key]}")


def print_env_history(entries: list[HistoryEntry], layout: Layout) -> None:
    """``history`` as text."""
    if not entries:
        out.print("no rotations yet")
        return
    print_history(entries, title=f"history of env {layout.env}")


def print_history(entries: list[HistoryEntry], *, title: str) -> None:
    """Past rotations and rollbacks, one line each, with who ran them."""
    out.print(f"{title}:")
    rows = []
    for e in entries:
        by = e.by.short() if e.by else "-"
        if e.done_by is not None:
            by += f", finished by {e.done_by.short()}"
        drain = format_duration(e.drain_seconds) if e.drain_seconds is not None else "-"
        when = commands.describe_time(e.finished_at)
        total = format_duration(e.finished_at - e.started_at)
        rows.append((e.id, e.result, e.from_color.value, e.to_color.value, when, drain, total, by))
    header = ("ID", "RESULT", "FROM", "TO", "FINISHED", "DRAIN", "TOTAL", "BY")
    print_columns(header, rows)


def print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Plain columns under *header*, one line per row, whatever the console's width (as
    kubectl prints): nothing wraps, and a line greps."""
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    for cells in (header, *rows):
        out.print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


# -- unlock / save-admin-url -----------------------------------------------------


def print_unlock(held: LockInfo | None) -> None:
    """What ``unlock`` released."""
    out.print(f"lock released (was held by {held.describe()})" if held else "lock was free")


def print_admin_saved(layout: Layout, admin: DbUrl) -> None:
    """Where ``save-admin-url`` stored the (masked) admin URL."""
    out.print(
        f"admin URL stored in {layout.admin_url} ({admin}); next: credflip rotate --env "
        f"{layout.env}"
    )
