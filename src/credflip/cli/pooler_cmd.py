"""``credflip save-pooler-url`` and ``pooler-userlist``: the env's PgBouncer."""

from __future__ import annotations

import click

from .. import commands
from ..errors import UsageError
from ..layout import Layout
from ..poolers import parse_pooler_url
from ..stores.base import Store
from .options import common, pooler_option
from .render import out


@click.command(name="save-pooler-url")
@common
@pooler_option
def save_pooler_url_cmd(*, store: Store, layout: Layout, pooler: str | None) -> None:
    """Register the PgBouncer the colors' URLs go through (its console URL, SecureString)."""
    if not pooler:
        raise UsageError(
            "save-pooler-url needs PgBouncer's console URL: --pooler - (standard input), "
            "--pooler @PATH or $CREDFLIP_POOLER_URL"
        )
    url = parse_pooler_url(pooler)
    version = commands.save_pooler_url(store, layout, pooler_url=url)
    out.print(
        f"PgBouncer console stored in {layout.pooler_url} ({url}, {version}); next: credflip "
        f"rotate --env {layout.env}"
    )


@click.command(name="pooler-userlist")
@common
def pooler_userlist_cmd(*, store: Store, layout: Layout) -> None:
    """Print the colors' lines for PgBouncer's auth_file (their SCRAM secrets, no password).

    Needed only when PgBouncer authenticates from an auth_file rather than auth_query: after
    each rotation's prepare, put them in the auth_file and RELOAD PgBouncer.
    """
    for line in commands.pooler_userlist(store, layout):
        out.print(line.render())
