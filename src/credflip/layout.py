"""Parameter names and colors: the only module that knows the layout.

With prefix ``/db`` and env ``prod`` the parameters are::

    /db/prod/blue-green-env            the pointer: "blue" or "green"
    /db/prod/{color}/writer-db-url     SecureString URL of that color's user
    /db/prod/{color}/reader-db-url     SecureString URL, reader endpoint
    /db/prod/rotation                  credflip's state (JSON)
    /db/prod/rotation-lock             present only while a rotation runs
    /db/prod/admin-db-url              optional SecureString admin URL
    /db/prod/admin-lease               present only while the admin lends itself rights
    /db/prod/pooler-url                optional SecureString: the env's PgBouncer console
    /db/prod/{color}/scram-verifier    SecureString, behind PgBouncer: the SCRAM secret
                                       credflip gave that color (for an auth_file)
    /db/prod/rds-proxy                 optional: the env's RDS Proxy (JSON)
    /db/prod/halted                    present only while the env is halted (JSON)
    /db/prod/rotation-window           optional: the window new rotations start in

and, for an env behind RDS Proxy, one Secrets Manager secret per color in the
proxy's format: ``credflip/db/prod/blue`` and ``credflip/db/prod/green``.

The first five are the contract with existing readers and must never change.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError, UsageError

__all__ = [
    "DEFAULT_PREFIX",
    "ROLES",
    "TTL_JITTER",
    "Color",
    "Layout",
    "Role",
    "validate_env",
    "validate_prefix",
]

DEFAULT_PREFIX = "/db"

#: Clients cache the pointer for ``ttl * uniform(1 - TTL_JITTER, 1 + TTL_JITTER)``
#: so that a fleet does not refresh in step; the drain phase waits for the
#: upper bound. Shared here because both sides of that contract depend on it.
TTL_JITTER = 0.1

Role = Literal["writer", "reader"]
ROLES: tuple[Role, Role] = ("writer", "reader")

_ENV_RE = re.compile(r"[A-Za-z0-9_.-]+")
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.-]+)+")


class Color(enum.StrEnum):
    """One of the two login users of an environment."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Color:
        """The color that is not this one."""
        return Color.GREEN if self is Color.BLUE else Color.BLUE

    @classmethod
    def parse(cls, value: str, *, where: str) -> Color:
        """Return the color named by *value*, or raise naming *where* it came from."""
        try:
            return cls(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{where} holds {value.strip()[:40]!r}, which is neither 'blue' nor 'green'; "
                f"set it to the color whose URLs work (e.g. 'blue')"
            ) from None


def validate_env(env: str) -> str:
    """Return *env* if it is a valid environment name, else raise :class:`UsageError`."""
    if not isinstance(env, str) or not _ENV_RE.fullmatch(env) or env in {".", ".."}:
        raise UsageError(
            f"invalid env name {env!r}: use letters, digits, '_', '.' or '-' (e.g. 'prod')"
        )
    return env


def validate_prefix(prefix: str) -> str:
    """Return *prefix* without a trailing slash if it is a slash path, else raise."""
    cleaned = prefix.rstrip("/") if isinstance(prefix, str) and prefix != "/" else prefix
    if not isinstance(cleaned, str) or not _PREFIX_RE.fullmatch(cleaned):
        raise UsageError(
            f"invalid prefix {prefix!r}: use a slash path of letters, digits, '_', '.' "
            f"or '-' (e.g. '/db')"
        )
    return cleaned


@dataclass(frozen=True)
class Layout:
    """The parameter names of one environment under one prefix."""

    env: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_env(self.env)
        object.__setattr__(self, "prefix", validate_prefix(self.prefix))

    @property
    def base(self) -> str:
        """The folder that holds every parameter of this environment."""
        return f"{self.prefix}/{self.env}"

    @property
    def pointer(self) -> str:
        """The parameter naming the active color."""
        return f"{self.base}/blue-green-env"

    def url(self, color: Color, role: Role) -> str:
        """The parameter holding *color*'s URL for *role* (writer or reader)."""
        return f"{self.base}/{color.value}/{role}-db-url"

    @property
    def state(self) -> str:
        """The parameter holding credflip's rotation state (JSON)."""
        return f"{self.base}/rotation"

    @property
    def lock(self) -> str:
        """The parameter that exists only while a rotation holds the lock."""
        return f"{self.base}/rotation-lock"

    @property
    def admin_url(self) -> str:
        """The optional parameter holding the admin URL."""
        return f"{self.base}/admin-db-url"

    @property
    def pooler_url(self) -> str:
        """The optional parameter holding the console URL of the env's PgBouncer."""
        return f"{self.base}/pooler-url"

    def verifier(self, color: Color) -> str:
        """The parameter holding the SCRAM secret credflip last gave *color* (kept only
        behind PgBouncer, whose ``auth_file`` needs exactly the server's)."""
        return f"{self.base}/{color.value}/scram-verifier"

    @property
    def lease(self) -> str:
        """The parameter that exists only while the admin holds rights it lent itself
        (a run that died before taking them back leaves it)."""
        return f"{self.base}/admin-lease"

    @property
    def rds_proxy(self) -> str:
        """The optional parameter naming the env's RDS Proxy (``init --rds-proxy``)."""
        return f"{self.base}/rds-proxy"

    @property
    def halted(self) -> str:
        """The parameter that exists only while the env is halted after repeated failed
        rotations (``credflip unhalt`` deletes it)."""
        return f"{self.base}/halted"

    @property
    def window(self) -> str:
        """The parameter naming the rotation window of the env's rotator (``rotate --window``),
        for ``status``."""
        return f"{self.base}/rotation-window"

    def proxy_secret(self, color: Color) -> str:
        """The Secrets Manager secret through which the env's RDS Proxy logs in as *color*:
        ``credflip/db/prod/blue`` (the prefix and env as in the parameters' names)."""
        return f"credflip{self.base}/{color.value}"

    @functools.cached_property
    def resolver_names(self) -> tuple[str, ...]:
        """The five names a client reads in one call: pointer, then URLs."""
        return (self.pointer, *(self.url(c, r) for c in Color for r in ROLES))

    @functools.cached_property
    def resolver_targets(self) -> dict[str, tuple[str, ...]]:
        """What a client reads after the pointer: each color's value to its URLs."""
        return {c.value: tuple(self.url(c, r) for r in ROLES) for c in Color}

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every parameter credflip reads when it manages this environment."""
        return (*self.resolver_names, self.state, self.lock, self.lease)
