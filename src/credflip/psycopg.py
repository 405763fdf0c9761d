"""psycopg_pool connection pools that follow the active color.

``connection_pool("prod")`` returns a :class:`psycopg_pool.ConnectionPool`
whose ``conninfo`` is a callable (psycopg_pool >= 3.3): every new connection
uses the URL the resolver returns at that moment. When the color changes the
pool is drained (``drain()``): idle connections are closed at once, busy ones
when they are returned. A connection found to be of the old color on
``getconn`` is discarded, and an authentication failure on connect triggers
one refresh and one more attempt.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from .errors import is_auth_failure
from .follow import ColorWatcher
from .layout import Color, Role
from .resolver import Resolver, given_or_default
from .stores.base import Store
from .urls import DbUrl
from .urls import libpq_kwargs as connect_kwargs

__all__ = ["CredflipPool", "connection_pool"]


class CredflipPool(ConnectionPool[Any]):
    """A :class:`~psycopg_pool.ConnectionPool` bound to one env and role."""

    def __init__(
        self,
        env: str,
        *,
        role: Role = "writer",
        resolver: Resolver,
        ttl: float | None = None,
        **pool_kwargs: Any,
    ) -> None:
        self.env = env
        self.role = role
        self.resolver = resolver
        self.resolve_ttl = ttl
        base = pool_kwargs.pop("connection_class", psycopg.Connection)
        self._user_check = pool_kwargs.pop("check", None)
        self._watcher = ColorWatcher(resolver, env, ttl=ttl, on_change=self._color_changed)
        super().__init__(
            self._conninfo,
            connection_class=_refreshing(base, self),
            check=self._check_color,
            **pool_kwargs,
        )
        if not self.closed:
            # Opened by the constructor (``open=True``), which does not go
            # through :meth:`open`: follow from now on too.
            self._follow()

    def _conninfo(self, *, refresh: bool = False) -> str:
        endpoints = (
            self.resolver.refresh(self.env)
            if refresh
            else self.resolver.resolve(self.env, ttl=self.resolve_ttl)
        )
        return make_conninfo(**connect_kwargs(DbUrl.parse(endpoints.url(self.role))))

    def _check_color(self, conn: psycopg.Connection[Any]) -> None:
        endpoints = self.resolver.resolve(self.env, ttl=self.resolve_ttl)
        if conn.info.user != endpoints.user:
            # The pool puts a connection that fails its check back unless it
            # is broken: close it, so that it is replaced by one of the new
            # color instead of being offered again and again.
            conn.close()
            raise psycopg.OperationalError("credflip: connection belongs to the old color")
        if self._user_check is not None:
            self._user_check(conn)

    def _color_changed(self, _color: Color) -> bool:
        if self.closed:
            return False
        self.drain()
        return True

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool and start following the color."""
        super().open(wait=wait, timeout=timeout)
        self._follow()

    def _follow(self) -> None:
        # A second start while the watcher runs does nothing.
        self._watcher.start(self.resolver.resolve(self.env, ttl=self.resolve_ttl).color)

    def close(self, timeout: float = 5.0) -> None:
        """Stop following and close the pool."""
        self._watcher.stop()
        super().close(timeout=timeout)


def _refreshing(base: type[psycopg.Connection[Any]], pool: CredflipPool) -> type[Any]:
    """A connection class that retries once, with a refreshed URL, when login is refused."""

    class RefreshingConnection(base):  # type: ignore[valid-type,misc]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                if not is_auth_failure(exc):
                    raise
                return super().connect(pool._conninfo(refresh=True), **kwargs)

    return RefreshingConnection


def connection_pool(
    env: str,
    *,
    role: Role = "writer",
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
    resolver: Resolver | None = None,
    **pool_kwargs: Any,
) -> CredflipPool:
    """A connection pool for *env*'s *role* URL that follows every rotation.

    Keyword arguments go to :class:`psycopg_pool.ConnectionPool` (``min_size``,
    ``max_size``, ``open``...). Use it as usual::

        with connection_pool("prod", min_size=2) as pool, pool.connection() as conn:
            conn.execute(...)
    """
    res = given_or_default(resolver, store=store, prefix=prefix)
    pool_kwargs.setdefault("open", True)
    return CredflipPool(env, role=role, resolver=res, ttl=ttl, **pool_kwargs)
