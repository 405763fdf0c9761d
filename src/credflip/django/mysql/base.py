"""Django's MySQL ``DatabaseWrapper`` with credflip's credentials."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import base, client

from ...urls import DbUrl, mysqlclient_kwargs
from .._wrapper import FollowingWrapper, client_class

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(FollowingWrapper, base.DatabaseWrapper):  # type: ignore[misc]
    client_class = client_class(client.DatabaseClient)

    @staticmethod
    def credflip_params(url: DbUrl) -> dict[str, Any]:
        params = mysqlclient_kwargs(url)
        params.pop("database", None)  # NAME stays Django's (the test runner swaps it)
        return params
