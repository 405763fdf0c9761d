"""What a database engine must offer a rotation.

An engine works through an *admin* URL: a user that can create roles and give
them rights, but need not be a superuser (RDS and Aurora do not hand those
out). Every statement an engine sends quotes identifiers and literals through
its driver; no password is ever sent in plaintext where the server allows a
client-side hash.

An engine plays three roles, each its own interface: it connects
(:class:`~.connector.Connector`), administers users
(:class:`~.user_admin.UserAdmin`) and observes their use
(:class:`~.usage_observer.UsageObserver`). The values they exchange are in
:mod:`.values`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .connector import DB_TIMEOUT_ENV, Connector
from .lease import LeaseBook
from .locks import LockWait
from .usage_observer import UsageObserver
from .user_admin import UserAdmin
from .values import (
    Lent,
    Observation,
    PooledBackend,
    SessionGroup,
    Sessions,
    Signal,
    Step,
    UserState,
)

__all__ = [
    "DB_TIMEOUT_ENV",
    "Connector",
    "Engine",
    "LeaseBook",
    "Lent",
    "Observation",
    "PooledBackend",
    "SessionGroup",
    "Sessions",
    "Signal",
    "Step",
    "UsageObserver",
    "UserAdmin",
    "UserState",
]


@dataclass
class Engine(Connector, UserAdmin, UsageObserver):
    """A database engine driven through an admin URL."""

    #: Registry name, e.g. ``"postgresql"``.
    name: ClassVar[str]
    #: URL schemes (without driver suffix) this engine serves.
    schemes: ClassVar[tuple[str, ...]]
    #: How the statements of a plan wait for locks other sessions hold (``--lock-timeout``).
    lock_wait: LockWait = field(default_factory=LockWait)
    #: Where the rights a plan lends the admin are recorded while a command runs.
    leases: LeaseBook | None = field(default=None, repr=False)

    def _probe_limits(self) -> list[tuple[Any, Any]]:
        return [(step.sql, step.params) for step in self._limit_steps()]
