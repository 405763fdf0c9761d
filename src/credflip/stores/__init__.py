"""Parameter stores, named by one URL: ``sqlite:///path`` or ``ssm://[REGION]``.

:func:`open_store` opens a store for everything credflip does; :func:`open_reader`
one that only serves a resolver, which in a Lambda may read SSM through the AWS
Parameters and Secrets Lambda Extension.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from ..errors import UsageError
from .base import Store

__all__ = ["DEFAULT_STORE", "Store", "open_reader", "open_store", "store_spec"]

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
        from .ssm import SsmStore

        region, endpoint_url, kms_key_id = _ssm_options(text)
        return SsmStore(region=region, endpoint_url=endpoint_url, kms_key_id=kms_key_id)
    raise UsageError(f"unknown store scheme {scheme!r}: use sqlite:///PATH or ssm://REGION")


def open_reader(spec: str | None = None) -> Store:
    """Open the store named by *spec* for a resolver, which only reads the pointer and URLs.

    An ``ssm://`` store reads them through the AWS Parameters and Secrets Lambda
    Extension in a Lambda (``CREDFLIP_SSM_EXTENSION`` unset or ``auto``) or
    wherever ``CREDFLIP_SSM_EXTENSION=on``, and through boto3 otherwise or when
    the extension does not answer. Everything else is :func:`open_store`'s.
    """
    text = store_spec(spec)
    if text.startswith("ssm://"):
        from .ssm_extension import SsmExtensionStore, extension_wanted

        if extension_wanted():
            region, endpoint_url, kms_key_id = _ssm_options(text)
            return SsmExtensionStore(
                region=region, endpoint_url=endpoint_url, kms_key_id=kms_key_id
            )
    return open_store(text)


def _ssm_options(text: str) -> tuple[str | None, str | None, str | None]:
    """The region, endpoint and KMS key an ``ssm://`` URL names."""
    parts = urlsplit(text)
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"endpoint_url", "kms_key_id"}
    if unknown:
        raise UsageError(
            f"invalid store option {sorted(unknown)[0]!r}: ssm:// takes endpoint_url and kms_key_id"
        )
    return parts.netloc or None, options.get("endpoint_url"), options.get("kms_key_id")
