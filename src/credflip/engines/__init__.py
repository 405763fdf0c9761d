"""Database engines, registered by name and chosen by URL scheme.

An :class:`Engine` plays three roles, each its own interface: it connects
(:class:`Connector`), administers users (:class:`UserAdmin`) and observes their
use (:class:`UsageObserver`).
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from ..errors import UsageError
from ..urls import DbUrl
from .base import (
    Connector,
    Engine,
    LeaseBook,
    Lent,
    Observation,
    PooledBackend,
    SessionGroup,
    Sessions,
    Signal,
    UsageObserver,
    UserAdmin,
    UserState,
)

__all__ = [
    "Connector",
    "Engine",
    "LeaseBook",
    "Lent",
    "Observation",
    "PooledBackend",
    "SessionGroup",
    "Sessions",
    "Signal",
    "UsageObserver",
    "UserAdmin",
    "UserState",
    "engine_class",
    "engine_for",
    "register",
]

_E = TypeVar("_E", bound=type[Engine])

_REGISTRY: dict[str, type[Engine]] = {}

#: Modules that register engines; imported only when an engine is needed so
#: that applications never load database drivers they do not use.
_MODULES = {
    "postgresql": "credflip.engines.postgres",
    "postgres": "credflip.engines.postgres",
    "psql": "credflip.engines.postgres",
    "mysql": "credflip.engines.mysql",
    "mariadb": "credflip.engines.mysql",
}


def register(cls: _E) -> _E:
    """Class decorator: make an engine available under its name and schemes."""
    _REGISTRY[cls.name] = cls
    for scheme in cls.schemes:
        _REGISTRY[scheme] = cls
    return cls


def engine_class(scheme: str) -> type[Engine]:
    """The engine class serving URL scheme *scheme* (driver suffix ignored)."""
    backend = scheme.split("+", 1)[0]
    if backend not in _REGISTRY and backend in _MODULES:
        importlib.import_module(_MODULES[backend])
    try:
        return _REGISTRY[backend]
    except KeyError:
        raise UsageError(
            f"unsupported database scheme {backend!r}: use postgresql:// or mysql://"
        ) from None


def engine_for(
    admin_url: DbUrl,
    *,
    connect_timeout: float | None = None,
    statement_timeout: float | None = None,
) -> Engine:
    """Return an engine that works through *admin_url*.

    Timeouts left out come from ``CREDFLIP_DB_TIMEOUT`` or the defaults.
    """
    eng = engine_class(admin_url.scheme)(admin_url)
    if connect_timeout is not None:
        eng.connect_timeout = connect_timeout
    if statement_timeout is not None:
        eng.statement_timeout = statement_timeout
    return eng
