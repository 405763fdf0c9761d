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
from typing import Any, TypeVar

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
    RotationResult,
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


def common(func: F) -> F:
    """Add ``--env``, ``--store`` and ``--prefix`` (with their env vars)."""

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
        with open_store(store) as opened:
            return func(*args, layout=layout, store=opened, **kwargs)

    return wrapper  # type: ignore[return-value]


def admin_option(func: F) -> F:
    """Add ``--admin-url``."""
    return click.option(
        "--admin-url",
        default=None,
        help="Admin URL [$CREDFLIP_ADMIN_URL, or the parameter {prefix}/{env}/admin-db-url].",
    )(func)


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
@common
@click.option("--admin-url", envvar="CREDFLIP_ADMIN_URL", required=True, help="Admin URL.")
@click.option("--writer-url", default=None, help="The URL the application uses today (writer).")
@click.option("--reader-url", default=None, help="The reader-endpoint URL (default: writer).")
@click.option("--green-user", default=None, help="Name of the green user (default <user>_green).")
@click.option("--group-role", default=None, help="Group role owning the objects (<user>_owner).")
@instance_option
def init(
    *,
    store: Store,
    layout: Layout,
    admin_url: str,
    writer_url: str | None,
    reader_url: str | None,
    green_user: str | None,
    group_role: str | None,
    instance: tuple[str, ...],
) -> None:
    """Start managing an env: the existing user becomes blue, green is created."""
    result = commands.init(
        store,
        layout,
        admin_url=DbUrl.parse(admin_url, what="--admin-url"),
        writer_url=DbUrl.parse(writer_url, what="--writer-url") if writer_url else None,
        reader_url=DbUrl.parse(reader_url, what="--reader-url") if reader_url else None,
        green_user=green_user,
        group_role=group_role,
        instances=instance,
        on_event=_Progress().handle,
    )
    how = "adopted the existing blue/green setup" if result.adopted else "initialised"
    out.print(f"env {layout.env}: {how} in {store.url}")
    for color, user in result.users.items():
        mark = " (active)" if color is result.active else ""
        out.print(f"  {color.value:<5} = {user}{mark}")
    if result.group:
        out.print(f"  group role {result.group} owns the objects; both users log in as it")
    for line in result.enabled:
        out.print(f"  {line}")
    _print_drain_view(result.instances, result.counter_gaps)
    out.print(f"next: credflip rotate --env {layout.env}")


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
    require_counters: bool,
    instance: tuple[str, ...],
    forget_instance: tuple[str, ...],
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
        require_counters=require_counters,
        instances=instance,
        forget_instances=forget_instance,
    )
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
@click.option("--client-ttl", default="1s", show_default=True, callback=_duration("--client-ttl"))
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
