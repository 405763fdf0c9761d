"""``credflip status``, ``resolve`` and ``history``: commands that only read."""

from __future__ import annotations

import click

from .. import commands
from ..errors import UsageError
from ..layout import Layout
from ..resolver import Resolver
from ..stores.base import Store
from ..urls import DbUrl
from . import render
from .options import admin_option, common, json_option
from .schedule_cmd import schedule_lines


@click.command(name="status")
@common
@admin_option
@json_option
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
        render.print_json(report.to_dict())
        return
    render.print_status(report, has_admin=admin is not None, schedule=schedule_lines(report))


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
