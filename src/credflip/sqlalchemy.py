"""SQLAlchemy engines that follow the active color.

``create_engine("prod")`` returns an ordinary :class:`sqlalchemy.engine.Engine`
whose every new DBAPI connection gets its credentials from the resolver
(``do_connect``). A pooled connection of the old color is replaced on checkout,
idle ones are closed as soon as the color changes, and an authentication
failure triggers one refresh and one more connect. One client TTL after a
switch a busy server holds no session of the old color; nothing is redeployed.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from .errors import is_auth_failure
from .follow import ColorWatcher
from .layout import Color, Role
from .resolver import Endpoints, Resolver, default_resolver
from .stores.base import Store
from .urls import DbUrl

__all__ = ["create_engine", "sqlalchemy_url"]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

_COLOR = "credflip_color"


def sqlalchemy_url(url: str) -> sqlalchemy.URL:
    """A SQLAlchemy URL for a credflip URL, with a driver (psycopg, PyMySQL) named."""
    parsed = DbUrl.parse(url)
    scheme = parsed.scheme if "+" in parsed.scheme else _DRIVERS.get(parsed.scheme, parsed.scheme)
    return make_url(parsed.secret).set(drivername=scheme)


def create_engine(
    env: str,
    *,
    role: Role = "writer",
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
    resolver: Resolver | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """``sqlalchemy.create_engine`` for *env*'s *role* URL, following every rotation.

    Extra keyword arguments go to :func:`sqlalchemy.create_engine`
    (``pool_size=5``, ``echo=True``...).
    """
    res = resolver if resolver is not None else default_resolver(store=store, prefix=prefix)
    first = res.resolve(env, ttl=ttl)
    # The password is never part of the engine's URL: do_connect supplies it.
    full = sqlalchemy_url(first.url(role))
    engine = sqlalchemy.create_engine(
        sqlalchemy.URL.create(
            drivername=full.drivername,
            username=full.username,
            host=full.host,
            port=full.port,
            database=full.database,
            query=full.query,
        ),
        **engine_kwargs,
    )

    def fill(cparams: dict[str, Any], endpoints: Endpoints) -> None:
        _cargs, params = engine.dialect.create_connect_args(sqlalchemy_url(endpoints.url(role)))
        cparams.update(params)

    @event.listens_for(engine, "do_connect")
    def _do_connect(
        dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        endpoints = res.resolve(env, ttl=ttl)
        fill(cparams, endpoints)
        try:
            conn = dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if not is_auth_failure(exc):
                raise
            endpoints = res.refresh(env)
            fill(cparams, endpoints)
            conn = dialect.connect(*cargs, **cparams)
        record.info[_COLOR] = endpoints.color
        return conn

    def of_old_color(record: ConnectionPoolEntry) -> bool:
        return record.info.get(_COLOR, None) not in (None, res.resolve(env, ttl=ttl).color)

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        if of_old_color(record):
            # The pool invalidates this connection and connects again (as
            # the new color) before handing it out.
            raise DisconnectionError("credflip: pooled connection belongs to the old color")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi: Any, record: ConnectionPoolEntry) -> None:
        # A connection of the old color coming back from a request closes
        # now rather than idling in the pool until its next checkout.
        if dbapi is not None and of_old_color(record):
            record.invalidate()

    ref = weakref.ref(engine)
    idle_of_old_color = threading.Event()

    def on_change(_color: Color) -> bool:
        idle_of_old_color.set()
        return close_idle()

    def close_idle() -> bool:
        target = ref()
        if target is None:
            return False
        pool = target.pool
        # Idle connections of the old color are closed while nothing is
        # checked out: QueuePool.dispose() then accounts exactly. Busy pools
        # shed them through the checkout/checkin handlers above instead.
        if idle_of_old_color.is_set() and getattr(pool, "checkedout", lambda: 0)() == 0:
            pool.dispose()
            idle_of_old_color.clear()
        return True

    watcher = ColorWatcher(res, env, ttl=ttl, on_change=on_change, on_poll=close_idle)
    watcher.start(first.color)
    weakref.finalize(engine, watcher.stop)
    event.listen(engine, "engine_disposed", lambda _engine: watcher.stop())
    return engine
