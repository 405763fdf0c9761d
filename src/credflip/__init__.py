"""credflip: change database passwords with zero downtime.

Applications follow the active color with :func:`resolve`::

    import credflip

    db = credflip.resolve("prod")      # cached; one store read when stale
    db.color, db.writer_url, db.reader_url

and call :func:`refresh` when the database rejects their credentials.
Importing this package loads no database driver and no AWS SDK.
"""

from __future__ import annotations

from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    CredflipError,
    DatabaseUnavailable,
    DrainTimeout,
    EngineError,
    InsufficientPrivilege,
    LockHeld,
    NotInitialized,
    RotationError,
    StoreError,
    StoreThrottled,
    UsageError,
    is_auth_failure,
)
from .layout import Color, Layout
from .resolver import Endpoints, Resolver, refresh, resolve
from .retry import call_with_refresh
from .stores import open_store
from .stores.base import Store
from .urls import DbUrl

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Color",
    "ConfigurationError",
    "ConnectFailed",
    "CredflipError",
    "DatabaseUnavailable",
    "DbUrl",
    "DrainTimeout",
    "Endpoints",
    "EngineError",
    "InsufficientPrivilege",
    "Layout",
    "LockHeld",
    "NotInitialized",
    "Resolver",
    "RotationError",
    "Store",
    "StoreError",
    "StoreThrottled",
    "UsageError",
    "__version__",
    "call_with_refresh",
    "is_auth_failure",
    "open_store",
    "refresh",
    "resolve",
]
