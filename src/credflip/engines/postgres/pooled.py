"""Use of a user through a pooler's server connections, as the server sees it.

PgBouncer keeps a user's server connections after its clients left; the
server's session view leaves them out (:data:`.signals.POOLED`), but a request
a client makes on one of them is use, even from a client that connected to
PgBouncer and left between two samples. Each request moves the backend's
``state_change`` in ``pg_stat_activity`` (to the microsecond, on the server's
clock): the newest of them over the pooler's connections of the user is the
drain's counter here. It is kept as the newest seen in this run, so that a
connection PgBouncer closes (``server_idle_timeout``) takes no use back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from ..values import PooledBackend
from .signals import POOLED, pooled_params

__all__ = ["SIGNAL", "PooledActivity"]

#: The counter's name, as the drain reports it.
SIGNAL = "pgbouncer connections"

_NEWEST = (
    "SELECT extract(epoch FROM max(state_change))::float8 FROM pg_stat_activity "
    f"WHERE usename = %s AND {POOLED}"
)


@dataclass
class PooledActivity:
    """The newest request seen on a pooler's connections of each user, in this run."""

    _newest: dict[str, float] = field(default_factory=dict)

    def newest(
        self,
        run: Callable[..., list[tuple[Any, ...]]],
        user: str,
        pooled: Collection[PooledBackend],
    ) -> float:
        """When one of *pooled* (the pooler's connections of *user*) last changed state:
        the newest seen so far in this run (0 before any)."""
        seen = 0.0
        if pooled:
            rows = run(_NEWEST, [user, *pooled_params(pooled)])
            seen = float(rows[0][0] or 0.0) if rows else 0.0
        newest = max(self._newest.get(user, 0.0), seen)
        self._newest[user] = newest
        return newest
