"""A rotation behind RDS Proxy: which proxy, and the checks before anything changes.

The env's proxy is the one ``init --rds-proxy`` recorded, or the one
``rotate --rds-proxy`` (the Lambda's ``rds_proxy``) names for an env that has
none yet: that run writes both colors' secrets and records the proxy once the
proxy lists them. ``--rds-proxy-endpoint`` with the env's proxy moves where it
is reached (recorded with the state, said once). Before a rotation changes
anything the proxy must list both secrets; a rotation resumed after its switch
is not held up by that (the old user is only drained and retired).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigurationError
from ..layout import Color
from ..poolers.rds_proxy import RdsProxy, attach, for_env, read_setting
from ..poolers.rds_proxy.setting import given_endpoint
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


def settle_proxy(ctx: Context, pointer: Color, *, revoked: bool) -> str | None:
    """Set ``ctx.rds_proxy``, writing both secrets when this run puts the env behind the
    proxy, or taking the ``--rds-proxy-endpoint`` given for the env's proxy; refuse while
    the proxy does not list both secrets. Returns what to say once the caller recorded
    the proxy's setting with the state (None: nothing to record)."""
    done = "nothing else was changed" if revoked else "nothing was changed"
    proxy, moved = _env_proxy(ctx)
    if proxy is not None:
        ctx.rds_proxy = proxy
        current = ctx.state.current
        if current is None or not current.phase.switched:
            proxy.require_registered(ctx.state.users, done=done)
        return moved
    name = ctx.options.rds_proxy
    if name is None:
        return None
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
    return f"env {ctx.layout.env} is now behind RDS Proxy {name}"


def _env_proxy(ctx: Context) -> tuple[RdsProxy | None, str | None]:
    """The env's recorded proxy (None: none), at the endpoint ``--rds-proxy-endpoint``
    gives when it names another one; and then what to say once that is recorded."""
    proxy = for_env(ctx.store, ctx.layout)
    asked = ctx.options.rds_proxy_endpoint
    if proxy is None or asked is None:
        return proxy, None
    endpoint = given_endpoint(asked, ctx.state.engine)
    if endpoint == proxy.setting.endpoint:
        return proxy, None
    was = proxy.setting.endpoint
    return proxy.moved_to(endpoint), f"RDS Proxy {proxy.name} is reached at {endpoint} (was {was})"


def dry_run_proxy(ctx: Context) -> None:
    """Set ``ctx.rds_proxy`` for a dry run, which refuses where the real run would, and
    cannot put an env behind a proxy (that writes the secrets)."""
    name = proxy_name(ctx)
    if name is None:
        return
    proxy, _moved = _env_proxy(ctx)
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
