"""Django backends that follow the active color: no redeploy after a rotation.

In ``settings.py``::

    import credflip.django

    DATABASES = {
        "default": credflip.django.database("prod", CONN_MAX_AGE=60),
        "replica": credflip.django.database("prod", role="reader", CONN_MAX_AGE=60),
    }

:func:`database` reads the store once (to pick the engine from the URL) and
returns an ordinary ``DATABASES`` entry whose ``ENGINE`` is
``credflip.django.postgresql`` (psycopg 3) or ``credflip.django.mysql``
(mysqlclient). Those are Django's own backends with credentials taken from the
resolver on every connect; see :mod:`credflip.django._wrapper` for what they
add. The settings never hold a password.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..layout import ROLES, Role
from ..resolver import default_resolver
from ..stores.base import Store
from ..urls import DbUrl

__all__ = ["database"]

NO_POOL = (
    "credflip.django does not follow Django's connection pool (OPTIONS['pool']): "
    "remove it and use CONN_MAX_AGE for persistent connections"
)

_ENGINES = {
    "postgresql": "credflip.django.postgresql",
    "mysql": "credflip.django.mysql",
}


def database(
    env: str,
    *,
    role: Role = "writer",
    store: Store | str | None = None,
    prefix: str | None = None,
    ttl: float | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A ``DATABASES`` entry for *env*'s *role* that follows every rotation.

    Keyword arguments in capitals are Django's own (``CONN_MAX_AGE``,
    ``CONN_HEALTH_CHECKS``, ``OPTIONS``, ``TEST``...). ``NAME`` defaults to
    the URL's database; ``HOST``/``PORT`` given here pin the address (a local
    proxy, say) while credentials still follow the color.
    """
    if role not in ROLES:
        raise UsageError(f"role {role!r} is not known: use 'writer' or 'reader'")
    if "PASSWORD" in settings or "USER" in settings:
        raise UsageError(
            "credflip.django.database() takes no USER or PASSWORD: they come from "
            "the store on every connect"
        )
    if "pool" in (settings.get("OPTIONS") or {}):
        raise UsageError(NO_POOL)
    resolver = default_resolver(store=store, prefix=prefix)
    url = DbUrl.parse(resolver.resolve(env, ttl=ttl).url(role), what=f"the {role} URL of {env!r}")
    engine = _ENGINES.get(url.family)
    if engine is None:
        raise UsageError(f"env {env!r} has a {url.backend} URL: Django needs PostgreSQL or MySQL")
    entry: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": url.database,
        "USER": url.user,  # informative: each connect uses the active color's user
        "PASSWORD": "",
        "HOST": url.host,
        "PORT": str(url.port or ""),
    }
    entry.update(settings)
    entry["CREDFLIP"] = {
        "env": env,
        "role": role,
        # A store object stays out of settings (Django deep-copies them).
        "store": store.url if isinstance(store, Store) else store,
        "prefix": prefix,
        "ttl": ttl,
        "follow_host": "HOST" not in settings and "PORT" not in settings,
    }
    return entry
