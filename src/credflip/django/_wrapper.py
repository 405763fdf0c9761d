"""What credflip's Django backends add to Django's own ``DatabaseWrapper``.

Django keeps one wrapper per thread and alias; with ``CONN_MAX_AGE > 0`` its
connection outlives requests. :class:`FollowingWrapper`:

- fills user, password (and host, port) from the resolver whenever Django
  opens a connection (``get_connection_params``), never from settings;
- retries a refused login once after a forced store read;
- closes a connection of the old color in ``close_if_unusable_or_obsolete``,
  which Django's ``close_old_connections`` calls at the start and the end of
  every request, so no request runs on a connection about to be locked out;
- lets a background watcher close the connection of a thread that sits idle
  between requests once the color has changed, so an idle worker does not keep
  a rotation's drain waiting. A wrapper counts as idle only from the end of a
  request until it is used again, and the watcher closes only the driver's
  connection, under the wrapper's lock; the owning thread notices and
  reconnects.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import DatabaseError, connections

from ..errors import is_auth_failure
from ..follow import ColorWatcher
from ..layout import Color, Role
from ..resolver import Endpoints, Resolver, default_resolver
from ..urls import DbUrl
from . import NO_POOL

__all__ = ["FollowingWrapper"]

log = logging.getLogger("credflip.django")

#: Connection parameters that come from the resolved URL on every connect.
_CREDENTIALS = ("user", "password")
_ADDRESS = ("host", "port")
#: The database name stays Django's NAME: its test runner swaps in test_<name>.
_DATABASE = ("dbname", "database")


class _Follower:
    """One (resolver, env, role) as every wrapper of this process follows it."""

    def __init__(self, resolver: Resolver, env: str, role: Role, ttl: float | None) -> None:
        self.resolver = resolver
        self.env = env
        self.role = role
        self.ttl = ttl
        self._wrappers: weakref.WeakSet[FollowingWrapper] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.watcher = ColorWatcher(
            resolver, env, ttl=ttl, on_change=self._sweep, on_poll=self._sweep_current
        )

    def resolve(self) -> Endpoints:
        return self.resolver.resolve(self.env, ttl=self.ttl)

    def refresh(self) -> Endpoints:
        return self.resolver.refresh(self.env)

    def add(self, wrapper: FollowingWrapper) -> None:
        color = self.resolve().color
        with self._lock:
            self._wrappers.add(wrapper)
            self.watcher.start(color)  # under the lock: one watcher thread

    def _sweep(self, color: Color) -> bool:
        with self._lock:
            wrappers = list(self._wrappers)
        for wrapper in wrappers:
            wrapper.credflip_close_if_idle(color)
        return True

    def _sweep_current(self) -> bool:
        # A thread may have gone idle after the change was seen: sweep on
        # every poll (the watcher resolved a moment ago, so this is cached).
        return self._sweep(self.resolve().color)


_followers: dict[tuple[int, str, str, float | None], _Follower] = {}
_followers_lock = threading.Lock()


def _follower(config: dict[str, Any]) -> _Follower:
    resolver = default_resolver(store=config.get("store"), prefix=config.get("prefix"))
    key = (id(resolver), config["env"], config["role"], config.get("ttl"))
    with _followers_lock:
        follower = _followers.get(key)
        if follower is None:
            follower = _followers[key] = _Follower(
                resolver, config["env"], config["role"], config.get("ttl")
            )
    return follower


def _merged(params: dict[str, Any], fresh: dict[str, Any], *, follow_host: bool) -> dict[str, Any]:
    """Django's connect *params* with the resolved URL's (*fresh*) credentials, and its
    address when *follow_host*; the database name stays Django's."""
    merged = dict(params)
    for key, value in fresh.items():
        if key in _CREDENTIALS or (key in _ADDRESS and follow_host):
            merged[key] = value
        elif key not in _ADDRESS and key not in _DATABASE:
            # Driver options of the URL (sslmode...); OPTIONS in settings win.
            merged.setdefault(key, value)
    return merged


class FollowingWrapper:
    """Mixed in before Django's ``DatabaseWrapper`` of each engine."""

    # Provided by Django's DatabaseWrapper.
    settings_dict: dict[str, Any]
    connection: Any
    in_atomic_block: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.settings_dict.get("CREDFLIP")
        if not isinstance(config, dict) or "env" not in config:
            raise ImproperlyConfigured(
                f"{self.settings_dict.get('ENGINE')} needs the settings made by "
                "credflip.django.database(env, ...): use that function for this alias"
            )
        if "pool" in (self.settings_dict.get("OPTIONS") or {}):
            raise ImproperlyConfigured(NO_POOL)
        self.credflip = _follower(config)
        self._credflip_address = bool(config.get("follow_host", True))
        self._credflip_lock = threading.Lock()
        self._credflip_endpoints: Endpoints | None = None
        self.credflip_color: Color | None = None
        self._credflip_idle = False
        self._credflip_closed_behind = False

    # -- what each engine supplies -----------------------------------------------

    @staticmethod
    def credflip_params(url: DbUrl) -> dict[str, Any]:
        """The driver's connect arguments for *url* (``libpq_kwargs``...)."""
        raise NotImplementedError

    # -- connecting ---------------------------------------------------------------

    def _credflip_apply(self, params: dict[str, Any], endpoints: Endpoints) -> dict[str, Any]:
        fresh = self.credflip_params(DbUrl.parse(endpoints.url(self.credflip.role)))
        return _merged(params, fresh, follow_host=self._credflip_address)

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()  # type: ignore[misc]
        self._credflip_endpoints = self.credflip.resolve()
        return self._credflip_apply(params, self._credflip_endpoints)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        endpoints = self._credflip_endpoints or self.credflip.resolve()
        new_connection = super().get_new_connection  # type: ignore[misc]
        try:
            conn = new_connection(conn_params)
        except Exception as exc:
            if not is_auth_failure(exc):
                raise
            stale = endpoints.color
            endpoints = self.credflip.refresh()
            log.info(
                "credflip: %s login for env %r was refused; retrying once as %s",
                stale,
                self.credflip.env,
                endpoints.color,
            )
            conn = new_connection(self._credflip_apply(conn_params, endpoints))
        with self._credflip_lock:
            self.credflip_color = endpoints.color
            self._credflip_idle = False
            self._credflip_closed_behind = False
        self.credflip.add(self)
        return conn

    # -- leaving the old color ----------------------------------------------------------

    def _credflip_wake(self) -> None:
        """The owning thread uses the wrapper again: not idle; drop a connection the
        watcher closed meanwhile."""
        if not self._credflip_idle:
            return  # only this thread sets it, so reading it unlocked is safe
        with self._credflip_lock:
            self._credflip_idle = False
            behind = self._credflip_closed_behind
        if behind:
            self.close()

    def close(self) -> None:
        """Django's close; never racing the watcher, and quiet about a connection the
        watcher closed already (a second close may be refused by the driver)."""
        with self._credflip_lock:
            self._credflip_idle = False
            behind = self._credflip_closed_behind
            self._credflip_closed_behind = False
        try:
            super().close()  # type: ignore[misc]
        except DatabaseError:
            if not behind:
                raise
            self.connection = None  # nothing is left to release

    def close_if_unusable_or_obsolete(self) -> None:
        """Django's per-request check, plus: a connection of the old color is closed."""
        self._credflip_wake()
        if self.connection is not None and not self.in_atomic_block:
            old = self.credflip_color is not None and (
                self.credflip_color is not self.credflip.resolve().color
            )
            if old or self._credflip_closed_behind:
                self.close()
                return
        super().close_if_unusable_or_obsolete()  # type: ignore[misc]

    def ensure_connection(self) -> None:
        self._credflip_wake()
        super().ensure_connection()  # type: ignore[misc]

    def _cursor(self, *args: Any, **kwargs: Any) -> Any:
        self._credflip_wake()
        return super()._cursor(*args, **kwargs)  # type: ignore[misc]

    def credflip_rest(self) -> None:
        """The request ended: the watcher may close this connection from now on."""
        with self._credflip_lock:
            self._credflip_idle = True

    def credflip_close_if_idle(self, color: Color) -> None:
        """From the watcher's thread: close an idle connection that is not of *color*."""
        with self._credflip_lock:
            conn = self.connection
            if (
                not self._credflip_idle
                or self._credflip_closed_behind
                or conn is None
                or self.credflip_color in (None, color)
            ):
                return
            try:
                conn.close()
            except Exception as exc:  # a broken connection is as good as closed
                log.debug("credflip: closing an idle connection failed: %s", type(exc).__name__)
            self._credflip_closed_behind = True
        log.debug("credflip: closed an idle %s connection of env %r", self.credflip_color, color)

    # -- manage.py dbshell ------------------------------------------------------------

    def credflip_settings(self) -> dict[str, Any]:
        """A copy of the settings with the active color's user, password and address."""
        url = DbUrl.parse(self.credflip.resolve().url(self.credflip.role))
        settings = dict(self.settings_dict)
        settings.update(USER=url.user, PASSWORD=url.password or "")
        if self._credflip_address:
            settings.update(HOST=url.host, PORT=str(url.port or ""))
        return settings


def _rest(**_kwargs: Any) -> None:
    # Runs after Django's close_old_connections (connected when django.db
    # was imported), in the thread that served the request.
    for conn in connections.all(initialized_only=True):
        if isinstance(conn, FollowingWrapper):
            conn.credflip_rest()


request_finished.connect(_rest, dispatch_uid="credflip.django.rest")


def client_class(base: type[Any]) -> type[Any]:
    """Django's ``DatabaseClient`` for dbshell, with the active color's credentials."""

    class CredflipClient(base):  # type: ignore[misc]
        def runshell(self, parameters: list[str]) -> None:
            import os
            import subprocess

            args, env = self.settings_to_cmd_args_env(
                self.connection.credflip_settings(), parameters
            )
            # The password travels in the environment (PGPASSWORD, MYSQL_PWD),
            # never on the command line.
            subprocess.run(args, env={**os.environ, **env} if env else None, check=True)  # noqa: S603

    return CredflipClient
