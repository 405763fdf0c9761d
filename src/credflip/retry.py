"""Retry once after an authentication failure, with a fresh resolve.

When a client's cached URL stops working (its user was retired, or someone
changed a password by hand), the database rejects the login: PostgreSQL with
SQLSTATE 28P01/28000 (psycopg reports it in the message on connect), MySQL
with error 1045 (or 3118/4151 for a locked account). The pointer has probably
moved, so the right reaction is one forced store read and one more attempt.
No driver is imported here: errors are recognised by their attributes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeVar

from .resolver import Endpoints, Resolver, default_resolver
from .stores.base import Store

__all__ = ["call_with_refresh", "is_auth_failure"]

log = logging.getLogger("credflip.retry")

T = TypeVar("T")

_PG_SQLSTATES = frozenset({"28P01", "28000"})
# 1045 access denied; 3118 (MySQL) and 4151 (MariaDB): account is locked.
_MYSQL_ERRNOS = frozenset({1045, 3118, 4151})
_PG_MESSAGES = re.compile(
    r"password authentication failed|is not permitted to log in|role \".*\" does not exist"
)


def is_auth_failure(exc: BaseException) -> bool:
    """True when *exc* (or what it wraps) is the database refusing the credentials."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in _PG_SQLSTATES:
            return True
        args = getattr(current, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_ERRNOS:
            return True
        if type(current).__module__.startswith("psycopg") and _PG_MESSAGES.search(str(current)):
            return True
        # SQLAlchemy keeps the driver's error in .orig.
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def call_with_refresh(
    env: str,
    func: Callable[[Endpoints], T],
    *,
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
    resolver: Resolver | None = None,
) -> T:
    """Call ``func(endpoints)``; on an authentication failure refresh and call it once more.

    ``func`` typically connects with ``endpoints.writer_url`` and does the
    work. Any other error, and a second authentication failure, propagate.
    """
    res = resolver if resolver is not None else default_resolver(store=store, prefix=prefix)
    endpoints = res.resolve(env, ttl=ttl)
    try:
        return func(endpoints)
    except Exception as exc:
        if not is_auth_failure(exc):
            raise
        fresh = res.refresh(env)
        log.info(
            "credflip: %s login for env %r was refused; retrying once as %s",
            endpoints.color,
            env,
            fresh.color,
        )
        return func(fresh)
