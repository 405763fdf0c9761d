"""Parameter stores, named by one URL: ``sqlite:///path`` or ``ssm://[REGION]``."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from ..errors import UsageError
from .base import Store

__all__ = ["DEFAULT_STORE", "Store", "open_store", "store_spec"]

#: The store used when neither ``--store`` nor ``CREDFLIP_STORE`` says otherwise.
DEFAULT_STORE = "sqlite:///.credflip/params.db"


def store_spec(spec: str | None = None) -> str:
    """Return *spec*, else ``$CREDFLIP_STORE``, else :data:`DEFAULT_STORE`."""
    return spec or os.environ.get("CREDFLIP_STORE") or DEFAULT_STORE


def open_store(spec: str | None = None, *, create: bool = False) -> Store:
    """Open the store named by *spec* (see :func:`store_spec` for the default).

    A local store file is created only with *create* (``credflip init``);
    otherwise a missing one is an error, so a typo creates nothing.

    ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` follow
    SQLAlchemy's convention. ``ssm://`` or ``ssm://REGION`` take the query
    options ``endpoint_url`` and ``kms_key_id``.
    """
    text = store_spec(spec)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise UsageError(f"invalid store {text!r}: use sqlite:///PATH or ssm://REGION")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise UsageError(
                f"invalid store {text!r}: write sqlite:///relative/path.db or "
                f"sqlite:////absolute/path.db"
            )
        from .sqlite import SqliteStore

        return SqliteStore(rest[1:], create=create)
    if scheme == "ssm":
        parts = urlsplit(text)
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"endpoint_url", "kms_key_id"}
        if unknown:
            raise UsageError(
                f"invalid store option {sorted(unknown)[0]!r}: ssm:// takes endpoint_url and "
                f"kms_key_id"
            )
        from .ssm import SsmStore

        return SsmStore(
            region=parts.netloc or None,
            endpoint_url=options.get("endpoint_url"),
            kms_key_id=options.get("kms_key_id"),
        )
    raise UsageError(f"unknown store scheme {scheme!r}: use sqlite:///PATH or ssm://REGION")
