"""An AWS Lambda handler that follows credflip rotations without a redeploy.

* Resolve at import: the cold start pays the one store read (one SSM
  ``GetParameters`` call for the pointer and both colors' URLs).
* Resolve again in every invocation: a cache hit (about a microsecond) that
  picks up a new color once the TTL (``CREDFLIP_TTL``, default 60 s) expires.
* Keep one connection per execution environment and reconnect when the color
  changed, so the old user's sessions end and the rotation's drain finishes.
* ``call_with_refresh`` retries once with a forced re-read when the database
  rejects the credentials (SQLSTATE 28P01, MySQL 1045).

Environment: ``DB_ENV`` (e.g. ``prod``), ``CREDFLIP_STORE`` (``ssm://`` on AWS).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

import credflip

ENV = os.environ.get("DB_ENV", "prod")
credflip.resolve(ENV)  # cold start: warm the cache

_conn: psycopg.Connection[Any] | None = None
_color: credflip.Color | None = None


def _connection(endpoints: credflip.Endpoints) -> psycopg.Connection[Any]:
    """The environment's connection, reopened when the active color changed."""
    global _conn, _color  # noqa: PLW0603 - one connection per execution environment
    if _conn is None or _conn.closed or _color is not endpoints.color:
        if _conn is not None:
            _conn.close()
        _conn = psycopg.connect(endpoints.writer_url, autocommit=True, connect_timeout=5)
        _color = endpoints.color
    return _conn


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Insert one order; return which color served it."""

    def work(endpoints: credflip.Endpoints) -> dict[str, Any]:
        conn = _connection(endpoints)
        conn.execute(
            "INSERT INTO orders (worker, color) VALUES (%s, %s)",
            (event.get("worker", 0), endpoints.color.value),
        )
        return {"ok": True, "color": endpoints.color.value}

    return credflip.call_with_refresh(ENV, work)
