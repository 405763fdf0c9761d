"""Django's PostgreSQL ``DatabaseWrapper`` with credflip's credentials."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, client

from ...urls import DbUrl, libpq_kwargs
from .._wrapper import FollowingWrapper, client_class

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(FollowingWrapper, base.DatabaseWrapper):  # type: ignore[misc]
    client_class = client_class(client.DatabaseClient)

    @staticmethod
    def credflip_params(url: DbUrl) -> dict[str, Any]:
        params = libpq_kwargs(url)
        params.pop("dbname", None)  # NAME stays Django's (the test runner swaps it)
        return params
