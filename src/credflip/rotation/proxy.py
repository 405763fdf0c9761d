"""A rotation behind RDS Proxy: which proxy, and the checks before anything changes.

The env's proxy is the one ``init --rds-proxy`` recorded, or the one
``rotate --rds-proxy`` (the Lambda's ``rds_proxy``) names for an env that has
none yet: that run writes both colors' secrets and records the proxy once the
proxy lists them. Before a rotation changes anything the proxy must list both
secrets; a rotation resumed after its switch is not held up by that (the old
user is only drained and retired).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigurationError
from ..layout import Color
from ..poolers.rds_proxy import attach, for_env, read_setting
from ..urls import DbUrl
from .context import Context
from .params import new_password

__all__ = ["counters_required", "dry_run_proxy", "proxy_name", "settle_proxy"]


def proxy_name(ctx: Context) -> str | None:
    """The name of the proxy this run works behind (None: none); refuses a ``--rds-proxy``
    that names another proxy than the env's."""
    stored = read_setting(ctx.store, ctx.layout)
    asked = ctx.options.rds_proxy
    if stored is not None and asked is not None and asked != stored.name:
        raise ConfigurationError(
            f"env {ctx.layout.env!r} is behind RDS Proxy {stored.name}, not {asked}: to move it, "
            f"delete {ctx.layout.rds_proxy} and run rotate --rds-proxy {asked}; nothing was "
            f"changed"
        )
    return stored.name if stored is not None else asked


def settle_proxy(ctx: Context, pointer: Color, *, revoked: bool) -> bool:
    """Set ``ctx.rds_proxy``, writing both secrets when this run puts the env behind the
    proxy (True: the caller records it with the state); refuse while the proxy does not
    list both secrets."""
    done = "nothing else was changed" if revoked else "nothing was changed"
    proxy = for_env(ctx.store, ctx.layout)
    if proxy is not None:
        ctx.rds_proxy = proxy
        current = ctx.state.current
        if current is None or not current.phase.switched:
            proxy.require_registered(ctx.state.users, done=done)
        return False
    name = ctx.options.rds_proxy
    if name is None:
        return False
    ctx.rds_proxy = attach(
        ctx.store,
        ctx.layout,
        name,
        engine=ctx.state.engine,
        endpoint=ctx.options.rds_proxy_endpoint,
        urls=_logins(ctx, pointer),
        direct=ctx.fleet.primary.admin_url,
        done=done,
    )
    return True


def dry_run_proxy(ctx: Context) -> None:
    """Set ``ctx.rds_proxy`` for a dry run, which refuses where the real run would, and
    cannot put an env behind a proxy (that writes the secrets)."""
    name = proxy_name(ctx)
    if name is None:
        return
    proxy = for_env(ctx.store, ctx.layout)
    if proxy is None:
        raise ConfigurationError(
            f"env {ctx.layout.env!r} is not behind RDS Proxy {name} yet: run rotate "
            f"--rds-proxy {name} without --dry-run (it writes both colors' secrets and checks "
            f"that the proxy lists them before anything else); nothing was changed"
        )
    ctx.rds_proxy = proxy
    proxy.require_registered(ctx.state.users, done="nothing was changed")


def _logins(ctx: Context, pointer: Color) -> dict[Color, DbUrl]:
    """Each color's login as its writer URL holds it; a color without URLs yet (green
    before its first rotation, locked) gets a password nobody uses until prepare
    writes its own."""
    active = ctx.urls(pointer)["writer"]
    out = {pointer: active}
    other = pointer.other
    try:
        out[other] = ctx.urls(other)["writer"]
    except ConfigurationError:
        out[other] = active.with_credentials(ctx.state.users[other], new_password())
    return out


def counters_required(name: str, gaps: Sequence[str], *, revoked: bool) -> ConfigurationError:
    """The refusal to drain behind RDS Proxy without a statement counter everywhere."""
    return ConfigurationError(
        f"behind RDS Proxy {name} the drain cannot go by open sessions (the proxy keeps the "
        f"old user's connections open after its clients left): it needs every instance to "
        f"count statements per user, and --sessions-only does not apply: {'; '.join(gaps)}; "
        f"nothing {'else ' if revoked else ''}was changed"
    )
