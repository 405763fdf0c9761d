"""``credflip init``: start managing an env."""

from __future__ import annotations

import shlex

import click

from .. import commands
from ..layout import Layout
from ..poolers import parse_pooler_url
from ..stores.base import Store
from ..urls import DbUrl
from . import render
from .options import (
    common,
    given_path,
    instance_option,
    lock_timeout_option,
    pooler_option,
    rds_proxy_options,
    url_option,
)
from .progress import Progress


@click.command(name="init")
@common(create=True)
@url_option("--admin-url", "Admin URL.", required=True)
@url_option("--writer-url", "The URL the application uses today (writer).")
@url_option("--reader-url", "The reader-endpoint URL (default: the writer URL).")
@click.option("--green-user", default=None, help="Name of the green user (default <user>_green).")
@click.option("--group-role", default=None, help="Group role owning the objects (<user>_owner).")
@pooler_option
@instance_option
@lock_timeout_option
@rds_proxy_options
@click.option(
    "--sessions-only",
    is_flag=True,
    help="Accept, for this env, draining on open sessions alone where an instance counts no "
    "logins (stored; status shows it; rotate --require-counters revokes it).",
)
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
    pooler: str | None,
    instance: tuple[str, ...],
    lock_timeout: float,
    rds_proxy: str | None,
    rds_proxy_endpoint: str | None,
    sessions_only: bool,
    save_admin_url: bool,
) -> None:
    """Start managing an env: the existing user becomes blue, green is created."""
    admin = DbUrl.parse(admin_url, what="--admin-url")
    pooler_url = parse_pooler_url(pooler) if pooler else None
    result = commands.init(
        store,
        layout,
        admin_url=admin,
        writer_url=DbUrl.parse(writer_url, what="--writer-url") if writer_url else None,
        reader_url=DbUrl.parse(reader_url, what="--reader-url") if reader_url else None,
        green_user=green_user,
        group_role=group_role,
        instances=instance,
        sessions_only=sessions_only,
        on_event=Progress().handle,
        lock_timeout=lock_timeout,
        rds_proxy=rds_proxy,
        rds_proxy_endpoint=rds_proxy_endpoint,
        pooler_url=pooler_url,
    )
    if save_admin_url:
        commands.save_admin_url(store, layout, admin_url=admin)
    render.print_init(
        result,
        layout,
        store.url,
        saved_admin=admin if save_admin_url else None,
        pooler=pooler_url,
        next_step=_next_step(ctx, layout, store, saved=save_admin_url),
    )


def _next_step(ctx: click.Context, layout: Layout, store: Store, *, saved: bool) -> str:
    """A ``next:`` line that works as printed in the same shell."""
    where = f"--env {layout.env}"
    if ctx.get_parameter_source("store") is click.core.ParameterSource.COMMANDLINE:
        # Quoted: a store URL's query (? and &) is not safe in a shell.
        where += f" --store {shlex.quote(store.url)}"
    if ctx.get_parameter_source("prefix") is click.core.ParameterSource.COMMANDLINE:
        where += f" --prefix {layout.prefix}"
    source = ctx.get_parameter_source("admin_url")
    if saved or source is click.core.ParameterSource.ENVIRONMENT:
        return f"next: credflip rotate {where}"
    path = given_path(ctx, "admin_url")
    if path is not None:
        return f"next: credflip rotate {where} --admin-url @{path}"
    # Given on stdin or in argv: nothing to repeat safely; store it once.
    return (
        f"next: credflip save-admin-url {where} --admin-url - (the admin URL on standard "
        f"input), then credflip rotate {where}"
    )
