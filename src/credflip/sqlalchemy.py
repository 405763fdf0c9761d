"""SQLAlchemy engines that follow the active color, sync and async.

``create_engine("prod")`` returns an ordinary :class:`sqlalchemy.engine.Engine`
whose every new DBAPI connection gets its credentials from the resolver
(``do_connect``). A pooled connection of the old color is replaced on checkout,
idle ones are closed as soon as the color changes, and an authentication
failure triggers one refresh and one more connect. One client TTL after a
switch a busy server holds no session of the old color; nothing is redeployed.

``create_async_engine("prod")`` does the same for an
:class:`~sqlalchemy.ext.asyncio.AsyncEngine` (psycopg async, asyncpg,
aiomysql). The event loop never waits for the store: a fresh cached value is
used in place, a store read runs in a worker thread, and the idle pool is
closed on the loop that owns its connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from .errors import UsageError, is_auth_failure
from .follow import ColorWatcher
from .layout import Color, Role
from .resolver import Endpoints, Resolver, given_or_default
from .stores.base import Store
from .urls import DbUrl

log = logging.getLogger("credflip.sqlalchemy")

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["create_async_engine", "create_engine", "sqlalchemy_url"]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

#: Async drivers by engine; the first is the default.
_ASYNC_DRIVERS = {
    "postgresql": ("psycopg", "asyncpg"),
    "mysql": ("aiomysql", "asyncmy"),
}

_COLOR = "credflip_color"


def sqlalchemy_url(url: str, *, driver: str | None = None) -> sqlalchemy.URL:
    """A SQLAlchemy URL for a credflip URL, with a driver (psycopg, PyMySQL) named."""
    parsed = DbUrl.parse(url)
    if driver is not None:
        scheme = f"{parsed.family}+{driver}"
    elif "+" in parsed.scheme:
        scheme = parsed.scheme
    else:
        scheme = _DRIVERS.get(parsed.scheme, parsed.scheme)
    return make_url(parsed.secret).set(drivername=scheme)


def _without_password(url: sqlalchemy.URL) -> sqlalchemy.URL:
    # The password is never part of an engine's URL: do_connect supplies it.
    return sqlalchemy.URL.create(
        drivername=url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )


class _Follower:
    """What makes one engine follow *env*: the connect, checkout and checkin hooks
    and a watcher that closes idle connections of the old color.

    ``lookup(fetch)`` is how a hook gets a resolver value: a sync engine calls
    *fetch* in place; an async one avoids blocking its event loop.
    ``close_idle(dispose)`` runs ``pool.dispose`` where the pool's connections
    may be closed.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        resolver: Resolver,
        env: str,
        role: Role,
        ttl: float | None,
        driver: str | None,
    ) -> None:
        self.resolver = resolver
        self.env = env
        self.role = role
        self.ttl = ttl
        self.driver = driver
        self.dialect = engine.dialect
        self._ref = weakref.ref(engine)
        # Every pool slot this engine connected, to tell whether a connection
        # of the old color is still open somewhere (idle in the pool).
        self._records: weakref.WeakSet[ConnectionPoolEntry] = weakref.WeakSet()
        self._records_lock = threading.Lock()
        self.watcher = ColorWatcher(
            resolver, env, ttl=ttl, on_change=self._changed, on_poll=self._poll
        )

    # -- how values are obtained; the async follower overrides these --------

    def resolve(self) -> Endpoints:
        return self.resolver.resolve(self.env, ttl=self.ttl)

    def refresh(self) -> Endpoints:
        return self.resolver.refresh(self.env)

    def current_color(self) -> Color | None:
        return self.resolve().color

    def dispose_idle(self, engine: Engine) -> None:
        self._dispose_if_quiet(engine)

    # -- the hooks ------------------------------------------------------------

    def install(self, engine: Engine, first: Color) -> None:
        event.listen(engine, "do_connect", self._do_connect)
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)
        self.watcher.start(first)
        weakref.finalize(engine, self.watcher.stop)
        event.listen(engine, "engine_disposed", lambda _engine: self.watcher.stop())

    def _fill(self, cparams: dict[str, Any], endpoints: Endpoints) -> None:
        url = sqlalchemy_url(endpoints.url(self.role), driver=self.driver)
        _cargs, params = self.dialect.create_connect_args(url)
        cparams.update(params)

    def _do_connect(
        self, dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        endpoints = self.resolve()
        self._fill(cparams, endpoints)
        try:
            conn = dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if not is_auth_failure(exc):
                raise
            endpoints = self.refresh()
            self._fill(cparams, endpoints)
            conn = dialect.connect(*cargs, **cparams)
        record.info[_COLOR] = endpoints.color
        with self._records_lock:
            self._records.add(record)
        return conn

    def _of_old_color(self, record: ConnectionPoolEntry) -> bool:
        color = record.info.get(_COLOR, None)
        if color is None:
            return False
        current = self.current_color()
        return current is not None and color is not current

    def _checkout(
        self, _dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if self._of_old_color(record):
            # The pool invalidates this connection and connects again (as
            # the new color) before handing it out.
            raise DisconnectionError("credflip: pooled connection belongs to the old color")

    def _checkin(self, dbapi: Any, record: ConnectionPoolEntry) -> None:
        # A connection of the old color coming back from a request closes
        # now rather than idling in the pool until its next checkout.
        if dbapi is not None and self._of_old_color(record):
            record.invalidate()

    # -- the watcher's callbacks (its own thread) --------------------------------

    def _changed(self, _color: Color) -> bool:
        return self._poll()

    def _poll(self) -> bool:
        engine = self._ref()
        if engine is None:
            return False
        if self._old_color_open():
            self.dispose_idle(engine)
        return True

    def _old_color_open(self) -> bool:
        current = self.current_color()
        with self._records_lock:
            records = list(self._records)
        return any(
            record.dbapi_connection is not None and record.info.get(_COLOR, current) is not current
            for record in records
        )

    def _dispose_if_quiet(self, engine: Engine) -> None:
        pool = engine.pool
        # Idle connections of the old color are closed while nothing is
        # checked out: QueuePool.dispose() then accounts exactly (the idle
        # ones of the new color go too, once per switch). Busy pools shed
        # them through the checkout/checkin handlers instead.
        if getattr(pool, "checkedout", lambda: 0)() == 0:
            pool.dispose()


class _AsyncFollower(_Follower):
    """The follower of an async engine: its hooks run in greenlets on the event
    loop, so a store read is awaited in a worker thread, and the idle pool is
    disposed on that loop."""

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: concurrent.futures.Future[None] | None = None

    def _await_in_thread(self, func: Callable[[], Endpoints]) -> Endpoints:
        try:
            from sqlalchemy.util import await_ as wait  # SQLAlchemy >= 2.1
        except ImportError:  # SQLAlchemy 2.0
            from sqlalchemy.util import await_only as wait

        result: Endpoints = wait(asyncio.to_thread(func))
        return result

    def resolve(self) -> Endpoints:
        cached = self.resolver.cached(self.env, ttl=self.ttl)
        if cached is not None:
            return cached
        return self._await_in_thread(super().resolve)

    def refresh(self) -> Endpoints:
        return self._await_in_thread(super().refresh)

    def current_color(self) -> Color | None:
        # Checkout and checkin must not wait for the store: the cache while
        # fresh, else what the watcher saw last (at most a poll behind).
        cached = self.resolver.cached(self.env, ttl=self.ttl)
        return cached.color if cached is not None else self.watcher.color

    def _do_connect(
        self, dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        self._loop = asyncio.get_running_loop()
        return super()._do_connect(dialect, record, cargs, cparams)

    def dispose_idle(self, engine: Engine) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or (self._pending and not self._pending.done()):
            return
        from sqlalchemy.util import greenlet_spawn

        async def dispose() -> None:
            await greenlet_spawn(self._dispose_if_quiet, engine)

        try:
            self._pending = asyncio.run_coroutine_threadsafe(dispose(), loop)
        except RuntimeError:  # the loop closed meanwhile
            self._pending = None
            return
        self._pending.add_done_callback(_log_failure)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    # Closing the idle pool on the loop failed: say so; the next poll tries again.
    if not future.cancelled() and future.exception() is not None:
        log.warning(
            "credflip: closing idle connections of the old color failed: %r", future.exception()
        )


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
    res = given_or_default(resolver, store=store, prefix=prefix)
    first = res.resolve(env, ttl=ttl)
    engine = sqlalchemy.create_engine(
        _without_password(sqlalchemy_url(first.url(role))), **engine_kwargs
    )
    follower = _Follower(engine, resolver=res, env=env, role=role, ttl=ttl, driver=None)
    follower.install(engine, first.color)
    return engine


def create_async_engine(
    env: str,
    *,
    role: Role = "writer",
    driver: str | None = None,
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
    resolver: Resolver | None = None,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """``sqlalchemy.ext.asyncio.create_async_engine`` for *env*'s *role* URL, following
    every rotation.

    *driver* is ``"psycopg"`` (default) or ``"asyncpg"`` for PostgreSQL,
    ``"aiomysql"`` (default) or ``"asyncmy"`` for MySQL. Create it outside the
    event loop (at import) or from a coroutine: the first resolve reads the
    store once. Extra keyword arguments go to SQLAlchemy (``pool_size=5``...).
    """
    from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

    res = given_or_default(resolver, store=store, prefix=prefix)
    first = res.resolve(env, ttl=ttl)
    engine_name = DbUrl.parse(first.url(role)).family
    choices = _ASYNC_DRIVERS.get(engine_name, ())
    chosen = driver or (choices[0] if choices else None)
    if chosen not in choices:
        raise UsageError(
            f"async driver {driver!r} is not supported for {engine_name}: use "
            f"{' or '.join(repr(c) for c in choices) or 'a PostgreSQL or MySQL URL'}"
        )
    async_engine = sa_create_async_engine(
        _without_password(sqlalchemy_url(first.url(role), driver=chosen)), **engine_kwargs
    )
    sync = async_engine.sync_engine
    follower = _AsyncFollower(sync, resolver=res, env=env, role=role, ttl=ttl, driver=chosen)
    follower.install(sync, first.color)
    return async_engine
