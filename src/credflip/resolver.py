"""Cached resolution of the active color's URLs, for applications.

One store read returns the pointer and both colors' URLs. The result is kept
per process for a TTL (default 60 s, ±10 % jitter so that a fleet does not
refresh in step), measured with ``time.monotonic()``. When the entry is
stale, exactly one thread reads the store; the others wait for that read.
When a read fails, the last good value keeps being served (a warning is
logged, never a secret) and reads are retried with exponential backoff;
only a resolver that never read anything raises.

Call :func:`refresh` when the database rejects the credentials (PostgreSQL
SQLSTATE 28P01, MySQL error 1045): the pointer has probably moved.

A store may answer from a cache of its own (the AWS Parameters and Secrets
Lambda Extension): it says how old its values may be, and that age counts
against the TTL, so a flip still arrives within it; a refresh asks for values
no cache answered.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import CredflipError, NotInitialized, UsageError
from .layout import DEFAULT_PREFIX, ROLES, TTL_JITTER, Color, Layout, Role
from .stores import open_reader, store_spec
from .stores.base import Store
from .urls import DbUrl, mask_url

__all__ = [
    "DEFAULT_TTL",
    "Endpoints",
    "Resolver",
    "clear_cache",
    "default_resolver",
    "refresh",
    "resolve",
]

log = logging.getLogger("credflip.resolver")

#: Seconds a resolved value is served before the store is read again.
DEFAULT_TTL = 60.0


@dataclass(frozen=True, repr=False)
class Endpoints:
    """The active color of an environment and its URLs (passwords included).

    ``repr`` and :meth:`to_dict` mask passwords; the attributes do not, since
    applications connect with them.
    """

    env: str
    color: Color
    writer_url: str
    reader_url: str

    def url(self, role: Role) -> str:
        """The URL for *role*: ``"writer"`` or ``"reader"``."""
        return self.writer_url if role == "writer" else self.reader_url

    @functools.cached_property
    def user(self) -> str:
        """The login user of the active color."""
        return DbUrl.parse(self.writer_url).user

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, str]:
        """``{"env", "color", "writer_url", "reader_url"}``, masked unless *show_secrets*."""
        show = (lambda u: u) if show_secrets else mask_url
        return {
            "env": self.env,
            "color": self.color.value,
            "writer_url": show(self.writer_url),
            "reader_url": show(self.reader_url),
        }

    def __repr__(self) -> str:
        return (
            f"Endpoints(env={self.env!r}, color={self.color.value!r}, "
            f"writer_url={mask_url(self.writer_url)!r}, reader_url={mask_url(self.reader_url)!r})"
        )


@dataclass
class _Entry:
    """The cache slot of one environment."""

    value: Endpoints | None = None
    fetched_at: float = 0.0
    factor: float = 1.0
    generation: int = 0
    failures: int = 0
    retry_at: float = 0.0
    error: CredflipError | None = None
    #: The value came from a cache in front of the store (age > 0): no refresh shares it.
    aged: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Resolver:
    """Resolves environments of one store and prefix, with a per-process cache.

    *store* is a :class:`~credflip.stores.Store` (injected) or a store URL;
    by default ``$CREDFLIP_STORE`` or the local SQLite file. The store is
    opened on the first read, so creating a resolver costs nothing.
    """

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        prefix: str | None = None,
        ttl: float | None = None,
        jitter: float = TTL_JITTER,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store if isinstance(store, Store) else None
        self._spec = store_spec(store) if not isinstance(store, Store) else store.url
        self.prefix = prefix or os.environ.get("CREDFLIP_PREFIX") or DEFAULT_PREFIX
        self.ttl = default_ttl() if ttl is None else float(ttl)
        if self.ttl < 0:
            raise UsageError("the resolver TTL must not be negative")
        self.jitter = jitter
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._layouts: dict[str, Layout] = {}
        self._lock = threading.Lock()
        #: Store reads done so far (for tests and benchmarks).
        self.reads = 0

    @property
    def store(self) -> Store:
        """The store, opened on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_reader(self._spec)
        return self._store

    def _entry(self, env: str) -> _Entry:
        entry = self._entries.get(env)
        if entry is None:
            with self._lock:
                entry = self._entries.setdefault(env, _Entry())
        return entry

    def resolve(self, env: str, *, ttl: float | None = None) -> Endpoints:
        """The active color's URLs of *env*, from cache while fresh."""
        value = self.cached(env, ttl=ttl)
        if value is not None:
            return value
        return self._update(env, self._entry(env), force=False, ttl=ttl)

    def cached(self, env: str, *, ttl: float | None = None) -> Endpoints | None:
        """The cached value of *env* while it is fresh, else None; never reads the store.

        Event loops use it: a hit costs nothing, a miss is resolved in a thread.
        """
        entry = self._entry(env)
        value = entry.value
        limit = self._ttl(ttl) * entry.factor
        if value is not None and self._clock() - entry.fetched_at < limit:
            return value
        return None

    def refresh(self, env: str) -> Endpoints:
        """Read *env* from the store now; concurrent calls share one read."""
        return self._update(env, self._entry(env), force=True)

    def invalidate(self, env: str | None = None) -> None:
        """Forget the cached value of *env* (of every env when None)."""
        with self._lock:
            if env is None:
                self._entries.clear()
            else:
                self._entries.pop(env, None)

    def _update(
        self, env: str, entry: _Entry, *, force: bool, ttl: float | None = None
    ) -> Endpoints:
        seen = entry.generation
        if not force and entry.value is not None and self._clock() < entry.retry_at:
            return entry.value  # backing off after a failure: serve the last good value
        with entry.lock:
            if entry.generation != seen and not (force and entry.aged):
                # Another thread read the store while we waited: share its result, unless
                # a cache answered it and this is a refresh (which must see the store now).
                if entry.value is not None:
                    return entry.value
                assert entry.error is not None  # noqa: S101
                raise entry.error
            try:
                value, age = self._read(env, max_age=0.0 if force else self._ttl(ttl))
            except CredflipError as exc:
                return self._failed(env, entry, exc)
            now = self._clock()
            entry.value = value
            entry.fetched_at = now - age  # a cache in front of the store: its age counts
            entry.aged = age > 0
            entry.factor = random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311
            entry.failures = 0
            entry.retry_at = 0.0
            entry.error = None
            entry.generation += 1
            return value

    def _failed(self, env: str, entry: _Entry, exc: CredflipError) -> Endpoints:
        now = self._clock()
        entry.failures += 1
        # The exponent is capped: after ~1000 failures (hours of an outage)
        # 2 ** n no longer fits a float and every resolve would crash.
        delay = min(self.max_backoff, self.backoff * 2 ** min(entry.failures - 1, 32))
        entry.retry_at = now + delay
        entry.error = exc
        entry.generation += 1
        if entry.value is None:
            raise exc
        log.warning(
            "credflip: reading env %r from %s failed (%s: %s); serving the %s value read %.0fs "
            "ago, next try in %.1fs",
            env,
            self._spec,
            type(exc).__name__,
            exc,
            entry.value.color,
            now - entry.fetched_at,
            delay,
        )
        return entry.value

    def _ttl(self, ttl: float | None) -> float:
        return self.ttl if ttl is None else ttl

    def _read(self, env: str, *, max_age: float) -> tuple[Endpoints, float]:
        layout = self._layouts.get(env)
        if layout is None:
            layout = self._layouts[env] = Layout(env, self.prefix)
        self.reads += 1
        values, age = self.store.get_pointed(
            layout.pointer, layout.resolver_targets, max_age=max_age
        )
        return _endpoints(env, layout, values, self._spec), age


def _endpoints(env: str, layout: Layout, values: Mapping[str, str], spec: str) -> Endpoints:
    """The active color's URLs among the store's *values* (read from *spec*)."""
    pointer = values.get(layout.pointer)
    if pointer is None:
        raise NotInitialized(
            f"env {env!r} has no pointer {layout.pointer} in {spec}: run 'credflip "
            f"init --env {env}' or check the env name, store and prefix"
        )
    color = Color.parse(pointer, where=f"pointer {layout.pointer}")
    urls: dict[str, str] = {}
    for role in ROLES:
        name = layout.url(color, role)
        if name not in values:
            raise NotInitialized(f"{name} is missing: run 'credflip rotate' or set it")
        urls[role] = values[name]
    return Endpoints(env, color, urls["writer"], urls["reader"])


def default_ttl() -> float:
    """``$CREDFLIP_TTL`` in seconds, else :data:`DEFAULT_TTL`."""
    raw = os.environ.get("CREDFLIP_TTL")
    if not raw:
        return DEFAULT_TTL
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"CREDFLIP_TTL={raw!r} is not a number of seconds") from None
    if value < 0:
        raise UsageError("CREDFLIP_TTL must not be negative")
    return value


_resolvers: dict[tuple[str, str], Resolver] = {}
_resolvers_lock = threading.Lock()


def default_resolver(*, store: Store | str | None = None, prefix: str | None = None) -> Resolver:
    """The process-wide resolver for a store and prefix (created on first use)."""
    spec = store.url if isinstance(store, Store) else store_spec(store)
    key = (spec, prefix or os.environ.get("CREDFLIP_PREFIX") or DEFAULT_PREFIX)
    resolver = _resolvers.get(key)
    if resolver is None:
        with _resolvers_lock:
            resolver = _resolvers.get(key)
            if resolver is None:
                resolver = Resolver(store=store, prefix=key[1])
                _resolvers[key] = resolver
    return resolver


def given_or_default(
    resolver: Resolver | None, *, store: Store | str | None, prefix: str | None
) -> Resolver:
    """*resolver* when an integration was given one, else :func:`default_resolver`."""
    return resolver if resolver is not None else default_resolver(store=store, prefix=prefix)


# The module-level functions look their resolver up by their own arguments:
# reading CREDFLIP_STORE/CREDFLIP_PREFIX on every call would cost more than the
# cache hit itself. The variables are read when a combination is first used.
_by_args: dict[tuple[object, str | None], Resolver] = {}


def _resolver_for(store: Store | str | None, prefix: str | None) -> Resolver:
    key = (store, prefix)
    resolver = _by_args.get(key)
    if resolver is None:
        resolver = _by_args[key] = default_resolver(store=store, prefix=prefix)
    return resolver


def resolve(
    env: str,
    *,
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
) -> Endpoints:
    """The active color and URLs of *env*; cached per process for *ttl* seconds.

    *store*, *prefix* and *ttl* default to ``$CREDFLIP_STORE``,
    ``$CREDFLIP_PREFIX`` and ``$CREDFLIP_TTL`` (read on first use) or the
    local SQLite file, ``/db`` and 60 seconds.
    """
    return _resolver_for(store, prefix).resolve(env, ttl=ttl)


def refresh(env: str, *, store: Store | str | None = None, prefix: str | None = None) -> Endpoints:
    """Re-read *env* now. Call it when the database rejects the credentials."""
    return _resolver_for(store, prefix).refresh(env)


def clear_cache() -> None:
    """Forget every process-wide resolver and what it cached (for tests)."""
    with _resolvers_lock:
        _resolvers.clear()
        _by_args.clear()
