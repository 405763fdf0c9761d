"""Retry once after an authentication failure, with a fresh resolve.

When a client's cached URL stops working (its user was retired, or someone
changed a password by hand), the database rejects the login (see
:func:`~credflip.errors.is_auth_failure`). The pointer has probably moved, so
the right reaction is one forced store read and one more attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from .errors import is_auth_failure
from .resolver import Endpoints, Resolver, given_or_default
from .stores.base import Store

__all__ = ["call_with_refresh", "is_auth_failure"]

log = logging.getLogger("credflip.retry")

T = TypeVar("T")


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
    res = given_or_default(resolver, store=store, prefix=prefix)
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
