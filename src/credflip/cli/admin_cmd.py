"""``credflip unlock``, ``save-admin-url`` and ``demo``: operator chores."""

from __future__ import annotations

import click

from .. import commands
from ..errors import CredflipError, UsageError
from ..layout import Layout
from ..stores.base import Store
from ..urls import DbUrl
from . import render
from .options import admin_option, common, duration_option


@click.command(name="unlock")
@common
@click.option("--force", is_flag=True, help="Required: the holder may still be running.")
def unlock_cmd(*, store: Store, layout: Layout, force: bool) -> None:
    """Break a stale rotation lock."""
    render.print_unlock(commands.unlock(store, layout, force=force))


@click.command(name="save-admin-url")
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
    render.print_admin_saved(layout, admin)


@click.command(name="demo")
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
    from ..demo import run_demo

    summary = run_demo(
        engine=engine,
        rotations=rotations,
        workers=workers,
        client_ttl=client_ttl,
        out=render.out,
        err=render.err,
    )
    if summary.failed:
        raise CredflipError(f"demo saw {summary.failed} failed request(s)")
