"""``credflip status``, ``resolve`` and ``history``: commands that only read."""

from __future__ import annotations

import click

from .. import commands
from ..errors import Unhealthy, UsageError
from ..layout import Layout
from ..resolver import Resolver
from ..stores.base import Store
from ..urls import DbUrl
from . import fleet_view, render
from .options import admin_option, common, duration_option, json_option
from .schedule_cmd import schedule_lines


@click.command(name="status")
@common(any_env=True)
@click.option(
    "--all",
    "all_envs",
    is_flag=True,
    help="Every env under --prefix, one row each, from the store alone; exit 5 when one is "
    "halted, failing or past its drain timeout.",
)
@duration_option(
    "--min-interval", None, "With --all: the schedule's min_interval, for each env's next due."
)
@admin_option
@json_option
def status(
    *,
    store: Store,
    layout: Layout | None,
    prefix: str,
    all_envs: bool,
    min_interval: float | None,
    admin_url: str | None,
    as_json: bool,
) -> None:
    """Show the active color, both users, sessions, the rotation and the lock; with --all,
    every env under the prefix."""
    if all_envs:
        given = _given(click.get_current_context())
        _status_all(store, prefix, min_interval, given_env=given, as_json=as_json)
        return
    if layout is None:
        raise UsageError("status needs --env ENV (or $CREDFLIP_ENV), or --all for every env")
    try:
        admin: DbUrl | None = commands.admin_url_for(store, layout, admin_url)
    except UsageError:
        if admin_url:
            raise
        admin = None
    report = commands.status(store, layout, admin_url=admin)
    if as_json:
        render.print_json(report.to_dict())
        return
    render.print_status(report, has_admin=admin is not None, schedule=schedule_lines(report))


def _given(ctx: click.Context) -> bool:
    """Whether ``--env`` was written on the command line (not taken from $CREDFLIP_ENV)."""
    return ctx.get_parameter_source("env") is click.core.ParameterSource.COMMANDLINE


def _status_all(
    store: Store, prefix: str, min_interval: float | None, *, given_env: bool, as_json: bool
) -> None:
    """``status --all``: print every env's row; raise :class:`Unhealthy` (exit 5) when one
    is unhealthy."""
    if given_env:
        raise UsageError("status --all shows every env under --prefix: leave out --env")
    fleet = commands.status_all(store, prefix=prefix, min_interval=min_interval)
    if as_json:
        render.print_json(fleet.to_dict())
    else:
        fleet_view.print_fleet(fleet)
    sick = [row for row in fleet.envs if not row.healthy]
    if sick:
        names = ", ".join(f"{row.env} ({fleet_view.health(row)})" for row in sick)
        raise Unhealthy(f"{len(sick)} of {len(fleet.envs)} envs under {prefix} unhealthy: {names}")


@click.command(name="resolve")
@common
@json_option
@click.option("--show-secrets", is_flag=True, help="Print passwords in the URLs.")
def resolve_cmd(*, store: Store, layout: Layout, as_json: bool, show_secrets: bool) -> None:
    """Print the active color and its URLs, as applications see them."""
    endpoints = Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env)
    data = endpoints.to_dict(show_secrets=show_secrets)
    if as_json:
        render.print_json(data)
        return
    render.print_resolved(data)


@click.command(name="history")
@common
@json_option
def history_cmd(*, store: Store, layout: Layout, as_json: bool) -> None:
    """List past rotations and rollbacks."""
    entries = commands.history(store, layout)
    if as_json:
        render.print_json([e.to_dict() for e in entries])
        return
    render.print_env_history(entries, layout)
