"""``credflip rotate`` (and ``--dry-run``) and ``credflip rollback``."""

from __future__ import annotations

import click

from .. import commands
from ..actor import run_by
from ..errors import OutsideWindow
from ..events import sender_for
from ..layout import Layout
from ..rotation import (
    Event,
    Notice,
    RotateOptions,
    RotationResult,
    plan_rotation,
    rollback,
    rotate,
)
from ..rotation.events import OnEvent
from ..rotation.schedule import check_start
from ..stores.base import Store
from ..urls import DbUrl
from ..windows import Windows
from . import render
from .options import (
    admin_option,
    common,
    confirm,
    duration_option,
    events_option,
    instance_option,
    lock_timeout_option,
    rds_proxy_options,
    unwatched_ok_option,
    yes_option,
)
from .progress import Progress
from .schedule_cmd import dry_run_notes, window_options


@click.command(name="rotate")
@common
@admin_option
@duration_option("--client-ttl", "60s", "Clients' cache TTL; the drain waits for it.")
@duration_option(
    "--quiet",
    None,
    "Retire the old user only after no use on any instance for this long "
    "[default: 40 x --client-ttl, at least 40s: clients that do not follow the pointer "
    "have no TTL; a value given is used as is].",
)
@duration_option(
    "--drain-timeout",
    None,
    "Past this after the switch, stop at the first use seen (exit 4, resumable; the old "
    "user is kept) [default: the shortest drain + 15m].",
)
@click.option(
    "--terminate",
    is_flag=True,
    help="End the old user's sessions once they were idle for the whole quiet window.",
)
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
    "How long the start and each phase retry while the database restarts, fails over or is "
    "read-only, or a statement waits for a lock (then exit 1, resumable).",
)
@lock_timeout_option
@click.option(
    "--sessions-only",
    is_flag=True,
    help="Where an instance counts no logins, drain on open sessions alone for this run "
    "(a client that connects and leaves between two samples may be missed); without it "
    "rotate refuses there.",
)
@click.option(
    "--require-counters",
    is_flag=True,
    help="Clear the env's stored init --sessions-only first (kept even when this run is "
    "refused), then refuse, before the rotation changes anything else, unless every "
    "instance counts logins per user.",
)
@instance_option
@click.option(
    "--forget-instance",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Stop watching an instance kept from an earlier --instance. Repeatable.",
)
@unwatched_ok_option
@rds_proxy_options
@window_options
@events_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the SQL, parameters, instances and signals a rotation would use; change nothing.",
)
@yes_option
def rotate_cmd(
    *,
    store: Store,
    layout: Layout,
    admin_url: str | None,
    client_ttl: float,
    quiet: float | None,
    drain_timeout: float | None,
    terminate: bool,
    retire: str,
    probe: str | None,
    min_drain: float,
    replica_lag_timeout: float,
    reconnect_timeout: float,
    lock_timeout: float,
    sessions_only: bool,
    require_counters: bool,
    instance: tuple[str, ...],
    forget_instance: tuple[str, ...],
    unwatched_ok: tuple[str, ...],
    rds_proxy: str | None,
    rds_proxy_endpoint: str | None,
    window: Windows | None,
    halt_after: int,
    events_bus: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Give the inactive user a new password and move every client to it."""
    options = RotateOptions(
        window=window,
        halt_after=halt_after,
        client_ttl=client_ttl,
        drain_timeout=drain_timeout,
        quiet=quiet,
        terminate=terminate,
        retire=retire,  # type: ignore[arg-type]
        probe=probe,
        min_drain=min_drain,
        replica_lag_timeout=replica_lag_timeout,
        reconnect_timeout=reconnect_timeout,
        lock_timeout=lock_timeout,
        sessions_only=sessions_only,
        require_counters=require_counters,
        instances=instance,
        forget_instances=forget_instance,
        unwatched_ok=unwatched_ok,
        rds_proxy=rds_proxy,
        rds_proxy_endpoint=rds_proxy_endpoint,
    )
    if dry_run:
        admin = commands.admin_url_for(store, layout, admin_url)
        dry_run_notes(store, layout, options)
        render.print_plan(plan_rotation(store, layout, admin_url=admin, options=options))
        return
    _start(store, layout, admin_url, options, events_bus, yes=yes)


def _start(
    store: Store,
    layout: Layout,
    admin_url: str | None,
    options: RotateOptions,
    events_bus: str | None,
    *,
    yes: bool,
) -> None:
    """Check, confirm and rotate; outside the window, say so and do nothing."""
    try:
        # Before asking anything: a halted env refuses, a closed window has nothing to do.
        check_start(store, layout, options)
        admin = commands.admin_url_for(store, layout, admin_url)
        progress = Progress()
        on_event = _with_events(progress, store, events_bus)
        retire = options.retire
        confirm(f"rotate env {layout.env} ({store.url}); retire the old user by {retire}?", yes=yes)
        result = _rotate(store, layout, admin, options, progress, on_event)
    except OutsideWindow as exc:
        render.out.print(f"credflip: {exc}")
        return
    render.print_result(result)


def _with_events(progress: Progress, store: Store, events_bus: str | None) -> OnEvent:
    """The progress on stderr, and with ``--events`` each milestone sent to the bus (a
    failed send is one warning among the progress)."""
    sender = sender_for(
        events_bus, store=store, warn=lambda m: progress.handle(Notice(m, "warning"))
    )
    if sender is None:
        return progress.handle

    def both(event: Event) -> None:
        progress.handle(event)
        sender(event)

    return both


def _rotate(
    store: Store,
    layout: Layout,
    admin: DbUrl,
    options: RotateOptions,
    progress: Progress,
    on_event: OnEvent,
) -> RotationResult:
    """The rotation, its progress on stderr, run by the person at the command line."""
    try:
        person = run_by(store, "person")
        return rotate(
            store, layout, admin_url=admin, options=options, on_event=on_event, actor=person
        )
    finally:
        progress.stop()


@click.command(name="rollback")
@common
@admin_option
@click.option("--probe", default=None, help="Extra SQL that must succeed with the old URLs.")
@lock_timeout_option
@events_option
@yes_option
def rollback_cmd(
    *,
    store: Store,
    layout: Layout,
    admin_url: str | None,
    probe: str | None,
    lock_timeout: float,
    events_bus: str | None,
    yes: bool,
) -> None:
    """Point clients back at the color that was active before the last rotation."""
    admin = commands.admin_url_for(store, layout, admin_url)
    on_event = _with_events(Progress(), store, events_bus)
    confirm(f"roll back env {layout.env} ({store.url})?", yes=yes)
    result = rollback(
        store,
        layout,
        admin_url=admin,
        probe=probe,
        on_event=on_event,
        lock_timeout=lock_timeout,
        actor=run_by(store, "person"),
    )
    render.print_rollback(color=result.color, user=result.user, flipped=result.flipped)
