"""The ``credflip`` command line: the only module that prints.

Errors are one line on stderr, ``credflip: error: ...``, with exit codes
0 ok, 1 failed, 2 usage, 3 lock held, 4 drain timed out. ``--debug`` adds the
traceback. No password is printed unless ``resolve --show-secrets`` asks.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, overload

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import commands
from .drain import Verdict
from .durations import format_duration, parse_duration
from .errors import CredflipError, UsageError
from .layout import DEFAULT_PREFIX, Layout
from .resolver import Resolver
from .rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseFinished,
    PhaseStarted,
    RotateOptions,
    RotationPlan,
    RotationResult,
    plan_rotation,
    rollback,
    rotate,
)
from .state import HistoryEntry
from .stores import open_store
from .stores.base import Store
from .urls import DbUrl

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

# markup=False: user names, URLs and server messages must print as they are.
out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def _duration(what: str) -> Callable[[click.Context, click.Parameter, str | None], float | None]:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
        return None if value is None else parse_duration(value, what=what)

    return convert


@overload
def common(func: F) -> F: ...


@overload
def common(*, create: bool = False) -> Callable[[F], F]: ...


def common(func: F | None = None, *, create: bool = False) -> F | Callable[[F], F]:
    """Add ``--env``, ``--store`` and ``--prefix`` (with their env vars).

    Only a command made with ``create=True`` (``init``) may create a local
    store file; the others report a missing one and create nothing.
    """

    def decorate(func: F) -> F:
        @click.option(
            "--env",
            "env",
            envvar="CREDFLIP_ENV",
            required=True,
            help="Environment name, e.g. prod [$CREDFLIP_ENV].",
        )
        @click.option(
            "--store",
            envvar="CREDFLIP_STORE",
            default=None,
            help="sqlite:///PATH (default sqlite:///.credflip/params.db) or ssm://REGION "
            "[$CREDFLIP_STORE].",
        )
        @click.option(
            "--prefix",
            envvar="CREDFLIP_PREFIX",
            default=DEFAULT_PREFIX,
            show_default=True,
            help="Parameter prefix [$CREDFLIP_PREFIX].",
        )
        @functools.wraps(func)
        def wrapper(*args: Any, env: str, store: str | None, prefix: str, **kwargs: Any) -> Any:
            layout = Layout(env, prefix)
            with open_store(store, create=create) as opened:
                return func(*args, layout=layout, store=opened, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


#: Environment variables of the URL options.
_URL_ENV = {
    "admin_url": "CREDFLIP_ADMIN_URL",
    "writer_url": "CREDFLIP_WRITER_URL",
    "reader_url": "CREDFLIP_READER_URL",
}


def _url_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A URL option's value: the URL itself, ``-`` (a line of stdin) or ``@PATH``.

    Messages never repeat the value: it may hold a password.
    """
    if value is None or param.name is None:
        return value
    name = "--" + param.name.replace("_", "-")
    env = _URL_ENV[param.name]
    if value == "-":
        first = ctx.meta.setdefault("credflip.stdin", name)
        if first != name:
            raise UsageError(
                f"{name} -: {first} already reads standard input, and only one option can; "
                f"pass {name} as @PATH or in ${env}"
            )
        line = sys.stdin.readline().strip()
        if not line:
            raise UsageError(f"{name} -: standard input is empty: pipe the URL in, one line")
        return line
    if value.startswith("@"):
        path = value[1:]
        ctx.meta[f"credflip.path.{param.name}"] = path  # a path, never the secret
        try:
            with open(path, encoding="utf-8") as fh:
                line = fh.readline().strip()
        except OSError as exc:
            raise UsageError(
                f"{name} @{path}: cannot read the file ({(exc.strerror or str(exc)).lower()}); "
                f"give a readable file whose first line is the URL"
            ) from None
        if not line:
            raise UsageError(f"{name} @{path}: the file's first line is empty; put the URL there")
        return line
    source = ctx.get_parameter_source(param.name)
    if source is click.core.ParameterSource.COMMANDLINE and _has_password(value):
        err.print(
            f"credflip: warning: {name} has a password on the command line, where ps and shell "
            f"history show it; use {name} @FILE, {name} - (standard input) or ${env}"
        )
    return value


def _has_password(text: str) -> bool:
    try:
        return bool(DbUrl.parse(text).password)
    except UsageError:
        return False


def url_option(name: str, help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """A URL option that keeps secrets off the command line (``-``, ``@PATH``, env var)."""
    env = _URL_ENV[name.removeprefix("--").replace("-", "_")]
    return click.option(
        name,
        envvar=env,
        default=None,
        required=required,
        metavar="URL|-|@PATH",
        callback=_url_value,
        help=f"{help_text} '-' reads a line of standard input, @PATH a file's first line [${env}].",
    )


def admin_option(func: F) -> F:
    """Add ``--admin-url``."""
    return url_option("--admin-url", "Admin URL (else the parameter {prefix}/{env}/admin-db-url).")(
        func
    )


def duration_option(name: str, default: str, help_text: str) -> Callable[[F], F]:
    """A duration option (``500ms``, ``90s``, ``15m``) parsed into seconds."""
    return click.option(
        name, default=default, show_default=True, callback=_duration(name), help=help_text
    )


def instance_option(func: F) -> F:
    """Add ``--instance HOST[:PORT]`` (repeatable)."""
    return click.option(
        "--instance",
        multiple=True,
        metavar="HOST[:PORT]",
        help="Another instance to watch (a replica), reached with the admin's login; kept in the "
        "env's state. Repeatable.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="credflip")
def cli(debug: bool) -> None:
    """Change database passwords with zero downtime (blue/green login users)."""
    _state["debug"] = debug


_state: dict[str, bool] = {"debug": False}


# -- init ----------------------------------------------------------------


@cli.command()
@common(create=True)
@url_option("--admin-url", "Admin URL.", required=True)
@url_option("--writer-url", "The URL the application uses today (writer).")
@url_option("--reader-url", "The reader-endpoint URL (default: the writer URL).")
@click.option("--green-user", default=None, help="Name of the green user (default <user>_green).")
@click.option("--group-role", default=None, help="Group role owning the objects (<user>_owner).")
@instance_option
@click.option(
    "--save-admin-url",
    is_flag=True,
    help="Store the admin URL as {prefix}/{env}/admin-db-url (SecureString), for rotate, "
    "status and the Lambda.",
)
@click.pass_context
def init(
    ctx: click.Context,
    *,
    store: Store,
    layout: Layout,
    admin_url: str,
    writer_url: str | None,
    reader_url: str | None,
    green_user: str | None,
    group_role: str | None,
    instance: tuple[str, ...],
    save_admin_url: bool,
) -> None:
    """Start managing an env: the existing user becomes blue, green is created."""
    admin = DbUrl.parse(admin_url, what="--admin-url")
    result = commands.init(
        store,
        layout,
        admin_url=admin,
        writer_url=DbUrl.parse(writer_url, what="--writer-url") if writer_url else None,
        reader_url=DbUrl.parse(reader_url, what="--reader-url") if reader_url else None,
        green_user=green_user,
        group_role=group_role,
        instances=instance,
        on_event=_Progress().handle,
    )
    if save_admin_url:
        commands.save_admin_url(store, layout, admin_url=admin)
    how = "adopted the existing blue/green setup" if result.adopted else "initialised"
    out.print(f"env {layout.env}: {how} in {store.url}")
    for color, user in result.users.items():
        mark = " (active)" if color is result.active else ""
        out.print(f"  {color.value:<5} = {user}{mark}")
    if result.group:
        out.print(f"  group role {result.group} owns the objects; both users log in as it")
    for line in result.enabled:
        out.print(f"  {line}")
    if save_admin_url:
        out.print(f"  admin URL stored in {layout.admin_url} ({admin})")
    _print_drain_view(result.instances, result.counter_gaps)
    out.print(_next_step(ctx, layout, store, saved=save_admin_url))


def _next_step(ctx: click.Context, layout: Layout, store: Store, *, saved: bool) -> str:
    """A ``next:`` line that works as printed in the same shell."""
    where = f"--env {layout.env}"
    if ctx.get_parameter_source("store") is click.core.ParameterSource.COMMANDLINE:
        where += f" --store {store.url}"
    if ctx.get_parameter_source("prefix") is click.core.ParameterSource.COMMANDLINE:
        where += f" --prefix {layout.prefix}"
    source = ctx.get_parameter_source("admin_url")
    if saved or source is click.core.ParameterSource.ENVIRONMENT:
        return f"next: credflip rotate {where}"
    path = ctx.meta.get("credflip.path.admin_url")
    if isinstance(path, str):
        return f"next: credflip rotate {where} --admin-url @{path}"
    # Given on stdin or in argv: nothing to repeat safely; store it once.
    return (
        f"next: credflip save-admin-url {where} --admin-url - (the admin URL on standard "
        f"input), then credflip rotate {where}"
    )


def _print_drain_view(instances: list[commands.InstanceStatus], gaps: list[str]) -> None:
    """What the drain sees on each instance, and how to close a gap."""
    out.print("drain signals:")
    for inst in instances:
        if inst.reachable is False:
            out.print(f"  {inst.address} ({inst.source}): unreachable: {inst.error}")
            continue
        have = ", ".join(s.name for s in inst.signals if s.available) or "-"
        role = "" if inst.standby is None else (" standby" if inst.standby else " primary")
        out.print(f"  {inst.address} ({inst.source}{role}): {have}")
        for sig in inst.signals:
            if not sig.available:
                out.print(f"    missing {sig.name}: {sig.detail}")
    if gaps:
        out.print(
            "  no login counter for: " + "; ".join(gaps) + " — a login shorter than one drain "
            "sample can be missed (see 'What the drain can see' in the README)"
        )


# -- rotate ----------------------------------------------------------------


@cli.command(name="rotate")
@common
@admin_option
@duration_option("--client-ttl", "60s", "Clients' cache TTL; the drain waits for it.")
@duration_option(
    "--drain-timeout", "15m", "Stop (exit 4, resumable) when old sessions outlast this."
)
@click.option("--terminate", is_flag=True, help="End old sessions at the drain timeout.")
@click.option(
    "--retire",
    type=click.Choice(["lock", "drop"]),
    default="lock",
    show_default=True,
    help="Lock the old user (reversible) or drop it.",
)
@click.option("--probe", default=None, help="Extra SQL that must succeed with the new URLs.")
@duration_option(
    "--min-drain",
    "0s",
    "Never retire the old user sooner after the switch (clients that cache until restart).",
)
@duration_option(
    "--replica-lag-timeout", "30s", "How long verify waits for replicas to replay the new password."
)
@duration_option(
    "--reconnect-timeout",
    "60s",
    "How long a phase retries while the database restarts or fails over (then exit 1, resumable).",
)
@click.option(
    "--require-counters",
    is_flag=True,
    help="Refuse (before any change) unless every instance counts logins per user.",
)
@instance_option
@click.option(
    "--forget-instance",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Stop watching an instance kept from an earlier --instance. Repeatable.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the SQL, parameters, instances and signals a rotation would use; change nothing.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rotate_cmd(
    *,
    store: Store,
    layout: Layout,
    admin_url: str | None,
    client_ttl: float,
    drain_timeout: float,
    terminate: bool,
    retire: str,
    probe: str | None,
    min_drain: float,
    replica_lag_timeout: float,
    reconnect_timeout: float,
    require_counters: bool,
    instance: tuple[str, ...],
    forget_instance: tuple[str, ...],
    dry_run: bool,
    yes: bool,
) -> None:
    """Give the inactive user a new password and move every client to it."""
    admin = commands.admin_url_for(store, layout, admin_url)
    options = RotateOptions(
        client_ttl=client_ttl,
        drain_timeout=drain_timeout,
        terminate=terminate,
        retire=retire,  # type: ignore[arg-type]
        probe=probe,
        min_drain=min_drain,
        replica_lag_timeout=replica_lag_timeout,
        reconnect_timeout=reconnect_timeout,
        require_counters=require_counters,
        instances=instance,
        forget_instances=forget_instance,
    )
    if dry_run:
        _print_plan(plan_rotation(store, layout, admin_url=admin, options=options))
        return
    if not yes and sys.stdin.isatty():
        click.confirm(
            f"rotate env {layout.env} ({store.url}); retire the old user by {retire}?",
            abort=True,
        )
    progress = _Progress()
    try:
        result = rotate(store, layout, admin_url=admin, options=options, on_event=progress.handle)
    finally:
        progress.stop()
    _print_result(result)


def _print_plan(plan: RotationPlan) -> None:
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
    out.print("1. prepare: SQL, in order")
    sql(plan.prepare)
    out.print("   parameters written:")
    for param in plan.parameters:
        out.print(f"    {param.name}  {param.kind}  {param.value}  ({param.when})")
    out.print("2. verify: log in with " + "; ".join(plan.verify))
    out.print(f"3. switch: {plan.parameters[-1].name} = {plan.to_color}")
    out.print(
        f"4. drain: watch {plan.from_user!r} for client TTL {format_duration(plan.client_ttl)}, "
        f"then no use for one more TTL; --min-drain {format_duration(plan.min_drain)}; at the "
        f"earliest {format_duration(plan.earliest_retire_after)} after the switch; timeout "
        f"{format_duration(plan.drain_timeout)}"
    )
    for address, source, signals in plan.instances:
        out.print(f"    {address} ({source}): {', '.join(signals) or 'no signal'}")
    for gap in plan.counter_gaps:
        out.print(f"    no login counter: {gap}")
    out.print("   SQL when the drain starts:")
    sql(plan.watch)
    out.print(f"5. retire ({plan.retire_mode}): SQL")
    sql(plan.retire)


def _print_result(result: RotationResult) -> None:
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


class _Progress:
    """Renders rotation events: a live line on a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self.last_print = 0.0
        self.last_key: object = None

    def handle(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            self.stop()
            what = " (resumed)" if event.resumed else ""
            err.print(f"[{event.phase}] {event.from_color} → {event.to_color}{what}")
        elif isinstance(event, PhaseFinished):
            self.stop()
            err.print(f"[{event.phase}] done in {format_duration(event.seconds)}")
        elif isinstance(event, Notice):
            self.stop()
            if event.level == "warning":
                err.print(f"credflip: warning: {event.message}")
            else:
                err.print(f"note: {event.message}")
        elif isinstance(event, DrainProgress):
            self.drain(event)

    def drain(self, event: DrainProgress) -> None:
        st = event.status
        if st.verdict is Verdict.CACHES:
            step = f"waiting for client caches {format_duration(st.caches_in)}"
        elif st.verdict is Verdict.IN_USE:
            shown = "; ".join(st.reasons[:2]) + (
                f"; {len(st.reasons) - 2} more" if len(st.reasons) > 2 else ""
            )
            step = f"in use: {shown}"
        else:
            step = f"quiet {format_duration(st.quiet)} of {format_duration(st.needed_quiet)}"
            if st.done_in > st.needed_quiet - st.quiet + 0.05:
                step += f", --min-drain: {format_duration(st.done_in)} left"
        text = (
            f"[drain] {event.user}: {step} — waited {format_duration(st.waited)}, "
            f"timeout in {format_duration(st.timeout_in)}"
        )
        if err.is_terminal:
            if self.live is None:
                self.live = Live(Text(text), console=err, refresh_per_second=8, transient=True)
                self.live.start()
            self.live.update(Text(text))
            return
        now = time.monotonic()
        key = (st.verdict, st.sessions, st.reasons[:1])
        if key != self.last_key or now - self.last_print >= 5:
            err.print(text)
            self.last_print, self.last_key = now, key

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


# -- status / resolve / history ------------------------------------------------


@cli.command()
@common
@admin_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(*, store: Store, layout: Layout, admin_url: str | None, as_json: bool) -> None:
    """Show the active color, both users, sessions, the rotation and the lock."""
    try:
        admin: DbUrl | None = commands.admin_url_for(store, layout, admin_url)
    except UsageError:
        if admin_url:
            raise
        admin = None
    report = commands.status(store, layout, admin_url=admin)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(f"env {report.env} ({report.engine}) in {report.store}: active {report.active}")
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
    if admin is None:
        out.print("(no admin URL: user state and sessions not shown)")
    if report.database_error:
        out.print(f"database: {report.database_error}")
    if admin is not None and not report.database_error:
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
                "standby" if inst.standby else "primary",
                *(str(inst.sessions[c.color].count) for c in report.colors),
                ", ".join(s.name for s in inst.signals if s.available),
            )
        out.print(table)
        if report.counter_gaps:
            out.print("no login counter: " + "; ".join(report.counter_gaps))
    rot = report.rotation
    if rot:
        out.print(
            f"rotation {rot.id}: {rot.from_color} → {rot.to_color}, phase {rot.phase}"
            + (f", last error: {rot.error}" if rot.error else "")
        )
        if report.earliest_retire is not None:
            out.print(
                f"the old user is retired at the earliest at "
                f"{commands.describe_time(report.earliest_retire)}, once it shows no use"
            )
    else:
        out.print("no rotation under way")
    out.print(f"lock: {report.lock.describe() if report.lock else 'free'}")
    if report.history:
        _print_history(report.history, title="last rotations")


@cli.command(name="resolve")
@common
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--show-secrets", is_flag=True, help="Print passwords in the URLs.")
def resolve_cmd(*, store: Store, layout: Layout, as_json: bool, show_secrets: bool) -> None:
    """Print the active color and its URLs, as applications see them."""
    endpoints = Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env)
    data = endpoints.to_dict(show_secrets=show_secrets)
    if as_json:
        out.print_json(json.dumps(data))
        return
    for key in ("env", "color", "writer_url", "reader_url"):
        out.print(f"{key}: {data[key]}")


@cli.command(name="history")
@common
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_cmd(*, store: Store, layout: Layout, as_json: bool) -> None:
    """List past rotations and rollbacks."""
    entries = commands.history(store, layout)
    if as_json:
        out.print_json(json.dumps([e.to_dict() for e in entries]))
        return
    if not entries:
        out.print("no rotations yet")
        return
    _print_history(entries, title=f"history of env {layout.env}")


def _print_history(entries: list[HistoryEntry], *, title: str) -> None:
    table = Table(title=title, title_justify="left", show_edge=False)
    for col in ("id", "result", "from", "to", "finished", "drain", "total"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e.id,
            e.result,
            e.from_color.value,
            e.to_color.value,
            commands.describe_time(e.finished_at),
            format_duration(e.drain_seconds) if e.drain_seconds is not None else "-",
            format_duration(e.finished_at - e.started_at),
        )
    out.print(table)


# -- rollback / unlock -------------------------------------------------------------


@cli.command(name="rollback")
@common
@admin_option
@click.option("--probe", default=None, help="Extra SQL that must succeed with the old URLs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rollback_cmd(
    *, store: Store, layout: Layout, admin_url: str | None, probe: str | None, yes: bool
) -> None:
    """Point clients back at the color that was active before the last rotation."""
    admin = commands.admin_url_for(store, layout, admin_url)
    if not yes and sys.stdin.isatty():
        click.confirm(f"roll back env {layout.env} ({store.url})?", abort=True)
    result = rollback(store, layout, admin_url=admin, probe=probe, on_event=_Progress().handle)
    if result.flipped:
        out.print(f"pointer back on {result.color} ({result.user})")
    else:
        out.print(f"rotation abandoned before the switch; {result.color} ({result.user}) active")


@cli.command(name="unlock")
@common
@click.option("--force", is_flag=True, help="Required: the holder may still be running.")
def unlock_cmd(*, store: Store, layout: Layout, force: bool) -> None:
    """Break a stale rotation lock."""
    held = commands.unlock(store, layout, force=force)
    out.print(f"lock released (was held by {held.describe()})" if held else "lock was free")


@cli.command(name="save-admin-url")
@common
@admin_option
def save_admin_url_cmd(*, store: Store, layout: Layout, admin_url: str | None) -> None:
    """Store the admin URL (SecureString) so that rotate, status and the Lambda find it."""
    if not admin_url:
        raise UsageError(
            "save-admin-url needs the admin URL: --admin-url - (standard input), --admin-url "
            "@PATH or $CREDFLIP_ADMIN_URL"
        )
    admin = DbUrl.parse(admin_url, what="--admin-url")
    commands.save_admin_url(store, layout, admin_url=admin)
    out.print(
        f"admin URL stored in {layout.admin_url} ({admin}); next: credflip rotate --env "
        f"{layout.env}"
    )


# -- demo ---------------------------------------------------------------


@cli.command(name="demo")
@click.option(
    "--engine",
    type=click.Choice(["postgresql", "mysql"]),
    default="postgresql",
    show_default=True,
)
@click.option("--rotations", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64))
@duration_option("--client-ttl", "1s", "Clients' cache TTL.")
def demo_cmd(engine: str, rotations: int, workers: int, client_ttl: float) -> None:
    """Rotate a throw-away database under live traffic and report."""
    from .demo import run_demo

    summary = run_demo(
        engine=engine,
        rotations=rotations,
        workers=workers,
        client_ttl=client_ttl,
        out=out,
        err=err,
    )
    if summary.failed:
        raise CredflipError(f"demo saw {summary.failed} failed request(s)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="credflip", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("credflip: aborted")
        return 1
    except click.exceptions.ClickException as exc:
        if debug:
            traceback.print_exc()
        message = exc.format_message().replace("\n", " ")
        err.print(f"credflip: error: {message}")
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except CredflipError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"credflip: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("credflip: interrupted; run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
