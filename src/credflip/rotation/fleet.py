"""The instances an env's drain watches, as the store and the state name them."""

from __future__ import annotations

from collections.abc import Callable

from ..engines import Engine
from ..instances import Fleet
from ..instances import normalize as instances_normalize
from ..layout import ROLES, Color, Layout
from ..poolers.rds_proxy.setting import read_setting
from ..state import State
from ..stores.base import Store
from ..urls import DbUrl
from .options import RotateOptions

__all__ = ["env_fleet", "instance_list"]


def env_fleet(
    store: Store,
    layout: Layout,
    state: State,
    engine: Engine,
    *,
    strict: bool = True,
    notice: Callable[[str], None] = lambda _m: None,
) -> Fleet:
    """The instances an env's drain watches: admin host, URL hosts, stored, Aurora members.

    A URL through the env's RDS Proxy names no instance: the proxy's sessions are
    on the instances behind it, and the admin may not log in through it.
    """
    values = store.get_many([*(layout.url(c, r) for c in Color for r in ROLES), layout.rds_proxy])
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
    return Fleet.of(engine, urls=urls, stored=state.instances, strict=strict, notice=notice)


def instance_list(stored: list[str], options: RotateOptions) -> list[str]:
    """The env's stored instances with ``--instance`` added and ``--forget-instance`` removed."""
    return instances_normalize(stored, options.instances, options.forget_instances)
