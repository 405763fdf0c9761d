"""What a rotation reads from the store, and the one place passwords are made."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ..errors import ConfigurationError
from ..layout import ROLES, Color, Layout, Role
from ..stores.base import Store
from ..urls import DbUrl

__all__ = ["new_password", "parse_urls", "read_pointer", "read_urls"]


def new_password() -> str:
    """A fresh password: 192 random bits, URL-safe characters."""
    return secrets.token_urlsafe(24)


def read_pointer(store: Store, layout: Layout) -> Color:
    """The active color, or an error naming the pointer parameter."""
    value = store.get(layout.pointer)
    if value is None:
        raise ConfigurationError(
            f"pointer {layout.pointer} is missing: run 'credflip init --env {layout.env}' or "
            f"restore it to the color whose URLs work"
        )
    return Color.parse(value, where=f"pointer {layout.pointer}")


def read_urls(store: Store, layout: Layout, color: Color) -> dict[Role, DbUrl]:
    """Both URLs of *color* from the store; raise when one is missing."""
    names = [layout.url(color, role) for role in ROLES]
    return parse_urls(layout, color, store.get_many(names))


def parse_urls(layout: Layout, color: Color, values: Mapping[str, str]) -> dict[Role, DbUrl]:
    """Both URLs of *color* out of *values* (parameter name → value)."""
    out: dict[Role, DbUrl] = {}
    for role in ROLES:
        name = layout.url(color, role)
        if name not in values:
            raise ConfigurationError(
                f"{name} is missing: run 'credflip rotate' to write it, or set it by hand"
            )
        out[role] = DbUrl.parse(values[name], what=name)
    return out
