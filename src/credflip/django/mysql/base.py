"""Django's MySQL ``DatabaseWrapper`` with credflip's credentials."""

from __future__ import annotations

from django.db.backends.mysql import base, client

from ...urls import mysqlclient_kwargs
from .._wrapper import FollowingWrapper, client_class

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(FollowingWrapper, base.DatabaseWrapper):  # type: ignore[misc]
    client_class = client_class(client.DatabaseClient)
    credflip_params = staticmethod(mysqlclient_kwargs)
