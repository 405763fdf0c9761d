"""Django's PostgreSQL ``DatabaseWrapper`` with credflip's credentials."""

from __future__ import annotations

from django.db.backends.postgresql import base, client

from ...urls import libpq_kwargs
from .._wrapper import FollowingWrapper, client_class

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(FollowingWrapper, base.DatabaseWrapper):  # type: ignore[misc]
    client_class = client_class(client.DatabaseClient)
    credflip_params = staticmethod(libpq_kwargs)
