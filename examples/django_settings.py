"""Django settings that follow credflip rotations: the lines to put in settings.py.

Both aliases read their credentials from the store on every new connection;
nothing in settings holds a password, and nothing is redeployed after a
rotation. ``CONN_MAX_AGE`` keeps connections across requests; one of the old
color is closed at the start of the next request, or by a watcher thread
while the worker sits idle.

    pip install 'credflip[django]' mysqlclient   # mysqlclient only for MySQL

Environment: ``DB_ENV`` (e.g. ``prod``), ``CREDFLIP_STORE`` (``ssm://`` on AWS),
``CREDFLIP_TTL`` (seconds a resolved URL is cached; default 60).
"""

from __future__ import annotations

import os
from typing import Any

import credflip.django

DB_ENV = os.environ.get("DB_ENV", "prod")

DATABASES = {
    # Writes: the env's writer URL (the Aurora cluster endpoint, say).
    "default": credflip.django.database(DB_ENV, CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True),
    # Reads: the env's reader URL (the reader endpoint), same rotation.
    "replica": credflip.django.database(
        DB_ENV, role="reader", CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True
    ),
}

# In a project this is "myproject.routers.ReplicaRouter".
DATABASE_ROUTERS = [f"{__name__}.ReplicaRouter"]


class ReplicaRouter:
    """Reads from the replica alias, writes (and migrations) on default."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"
