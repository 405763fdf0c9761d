"""An AWS Lambda handler that follows credflip rotations without a redeploy.

* Resolve in every invocation: the first one (the cold start) reads the
  store, the next ones are cache hits (about a microsecond) that pick up a new
  color once the TTL (``CREDFLIP_TTL``, default 60 s) expires. Not at import:
  with the AWS Parameters and Secrets Lambda Extension the first read needs no
  boto3, but the extension does not answer during the init phase, where
  import-time code runs (credflip would read through boto3 then).
* Keep one connection per execution environment and reconnect when the color
  changed, so the old user's sessions end and the rotation's drain finishes.
* ``call_with_refresh`` retries once with a forced re-read when the database
  rejects the credentials (SQLSTATE 28P01, MySQL 1045).

Environment: ``DB_ENV`` (e.g. ``prod``), ``CREDFLIP_STORE`` (``ssm://`` on AWS),
and with the extension ``SSM_PARAMETER_STORE_TTL=0`` (see the README, "In a Lambda").
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

import credflip

ENV = os.environ.get("DB_ENV", "prod")

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
