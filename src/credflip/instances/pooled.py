"""What the env's PgBouncer changes in reading its instances.

PgBouncer's clients of a user are that user's sessions there; the server
connections it keeps of the user are sessions on the server that are not use
by themselves, so the instances' session views leave them out
(:class:`~credflip.engines.PooledBackend`); at retire they are ended from the
server's side, since PgBouncer can end all connections of a database but none
of one user alone (``KILL`` and ``RECONNECT`` take a database).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ..drain import Reading
from ..engines import PooledBackend, Sessions
from ..errors import CredflipError, RotationError
from ..poolers import PgBouncer
from ..waiting import Wait
from .addresses import Instance

if TYPE_CHECKING:
    from .connections import Connections

__all__ = ["end_pooled", "pooler_reading", "pooler_sessions"]


def pooler_reading(
    pooler: PgBouncer | None, user: str
) -> tuple[tuple[PooledBackend, ...] | None, list[Reading]]:
    """The pooler's server connections of *user* and its drain reading (a one-item list),
    or None and nothing without a pooler. A pooler that cannot be read is a reading with
    its error (the drain counts it as in use), and no session is left out of the
    servers' (None)."""
    if pooler is None:
        return None, []
    try:
        seen = pooler.observe(user)
    except CredflipError as exc:
        return None, [Reading(pooler.label, error=str(exc))]
    obs = seen.observation
    reading = Reading(
        pooler.label,
        obs.sessions,
        obs.counters,
        started=obs.started,
        unknown=seen.unknown,
        servers=seen.servers,
    )
    return seen.backends, [reading]


def pooler_sessions(
    pooler: PgBouncer | None, user: str
) -> tuple[tuple[PooledBackend, ...], list[tuple[Instance, Sessions | CredflipError]]]:
    """The pooler's server connections of *user*, and its clients there as the sessions of
    one more place (or the error); nothing without a pooler."""
    if pooler is None:
        return (), []
    where = Instance(pooler.host, pooler.port, pooler.name)
    try:
        seen = pooler.view(user)
    except CredflipError as exc:
        return (), [(where, exc)]
    return seen.backends, [(where, seen.clients)]


def end_pooled(
    fleet: Connections, user: str, backends: Collection[PooledBackend], *, wait: Wait
) -> tuple[int, int]:
    """End *backends*, server connections the fleet's pooler keeps of *user* and no client
    holds, on the servers (by pid and port, those idle there), then wait while PgBouncer
    still lists some of them.

    Returns how many sessions ended and how many of *backends* PgBouncer still lists
    when *wait* is over (0 once it let go of all of them).
    """
    pooler = fleet.pooler
    if pooler is None or not backends:
        return 0, 0
    ended = 0
    for inst in fleet.instances:
        eng = fleet.engine(inst)
        try:
            ended += eng.terminate(user, only=backends)
        except CredflipError as exc:
            eng.close()
            raise RotationError(
                f"cannot end the PgBouncer connections of {user!r} on {inst.address}: {exc}"
            ) from exc
    while True:
        left = len(set(pooler.backends(user)) & set(backends))
        if not left or not wait.pause():
            return ended, left
