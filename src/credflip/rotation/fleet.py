"""The instances an env's drain watches, as the store and the state name them."""

from __future__ import annotations

from collections.abc import Callable

from ..engines import Engine
from ..instances import Fleet
from ..instances import normalize as instances_normalize
from ..layout import ROLES, Color, Layout
from ..poolers import PgBouncer, parse_pooler_url
from ..poolers.console import Console
from ..poolers.rds_proxy.setting import read_setting
from ..state import State
from ..stores.base import Store
from ..urls import DbUrl
from .options import RotateOptions

__all__ = ["env_fleet", "env_pooler", "instance_list"]


def env_fleet(
    store: Store,
    layout: Layout,
    state: State,
    engine: Engine,
    *,
    strict: bool = True,
    notice: Callable[[str], None] = lambda _m: None,
) -> Fleet:
    """The instances an env's drain watches: admin host, URL hosts, stored, Aurora members;
    and the env's PgBouncer, when it has one.

    A URL through the env's RDS Proxy names no instance: the proxy's sessions are
    on the instances behind it, and the admin may not log in through it.
    """
    names = [*(layout.url(c, r) for c in Color for r in ROLES), layout.pooler_url]
    values = store.get_many([*names, layout.rds_proxy])
    pooler = env_pooler(layout, values.get(layout.pooler_url), bound=engine)
    proxy = read_setting(store, layout, values)
    urls: list[tuple[str, DbUrl]] = []
    for color in Color:
        for role in ROLES:
            text = values.get(layout.url(color, role))
            if not text:
                continue
            url = DbUrl.parse(text, what=layout.url(color, role))
            if proxy is None or not proxy.is_endpoint(url.host):
                urls.append((f"{color} {role} URL", url))
    return Fleet.of(
        engine, urls=urls, stored=state.instances, strict=strict, notice=notice, pooler=pooler
    )


def env_pooler(
    layout: Layout, stored: str | None, *, bound: Engine | None = None
) -> PgBouncer | None:
    """The env's PgBouncer from its stored console URL (None when it has none). Its
    console waits for a connect or an answer as long as the engine *bound* does (the
    Lambda bounds it by its margin), else as the engines do (``CREDFLIP_DB_TIMEOUT``)."""
    if not stored:
        return None
    url = parse_pooler_url(stored, what=layout.pooler_url)
    if bound is None:
        return PgBouncer(url)
    console = Console(
        url, connect_timeout=bound.connect_timeout, statement_timeout=bound.statement_timeout
    )
    return PgBouncer(url, console=console)


def instance_list(stored: list[str], options: RotateOptions) -> list[str]:
    """The env's stored instances with ``--instance`` added and ``--forget-instance`` removed."""
    return instances_normalize(stored, options.instances, options.forget_instances)
