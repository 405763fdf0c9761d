"""A phase's plan: the statements and store writes it makes, and the logins it tries, as data.

Every phase has ``plan(ctx)``, which reads what it needs and returns a
:class:`PhasePlan` without changing anything, and ``run(ctx)``, which carries
out exactly what ``plan(ctx)`` returned. ``rotate --dry-run`` walks the same
``plan`` functions and prints their plans instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.base import Step
from ..layout import Color
from ..state import Phase
from ..urls import DbUrl, mask_url

__all__ = ["Login", "PhasePlan", "Predrain", "SecretWrite", "Write"]


@dataclass(frozen=True)
class Write:
    """A parameter the phase writes."""

    name: str
    #: The value as written; a URL with its password for a SecureString.
    value: str = field(repr=False)
    secure: bool

    @property
    def kind(self) -> str:
        """``SecureString`` or ``String``, as SSM calls them."""
        return "SecureString" if self.secure else "String"

    @property
    def shown(self) -> str:
        """The value with any password masked."""
        return mask_url(self.value) if self.secure else self.value


@dataclass(frozen=True)
class SecretWrite:
    """A Secrets Manager secret the phase writes: how RDS Proxy logs in as *color*."""

    color: Color
    name: str
    #: The login it holds (its user and password, on the database behind the proxy).
    url: DbUrl

    @property
    def shown(self) -> str:
        """What the secret holds, its password masked."""
        return f'{{"username": "{self.url.user}", "password": "***", ...}}'


@dataclass(frozen=True)
class Login:
    """A login verify makes: *label* names it, *url* is exactly what clients will use."""

    label: str
    url: DbUrl
    #: True for a replica, which may not have replayed the new password yet.
    replica: bool = False
    #: Why a refused login is retried (default: a replica that has not replayed it yet).
    why: str = ""
    #: True for a login through the env's pooler (PgBouncer), which must know the new
    #: password too (auth_query reads it from the server; an auth_file must be
    #: regenerated and reloaded); tried again like a replica's.
    pooler: bool = False


@dataclass(frozen=True)
class Predrain:
    """Before prepare changes its password: the color a rollback moved clients away from,
    drained like an old user (clients that do not follow the pointer may still use it)."""

    user: str
    color: Color
    #: When the pointer left it (a rollback; the primary's clock): the drain counts from it.
    since: float
    #: The quiet window it needs (the rotation's, as for the drain).
    window: float
    #: The earliest it can end, in seconds after *since*, when nothing uses it.
    shortest: float
    #: The statements that make its logins countable (the drain's watch).
    steps: list[Step] = field(default_factory=list)


@dataclass
class PhasePlan:
    """What one phase would do, in order: statements, then writes; logins for verify.

    Prepare's plan starts with a :class:`Predrain` after a rollback that had
    switched; its statements are then planned as the catalog is now.
    """

    phase: Phase
    steps: list[Step] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)
    predrain: Predrain | None = None
    #: Behind RDS Proxy: the new color's secret, written after the store writes.
    secrets: list[SecretWrite] = field(default_factory=list)
