"""PyMySQL's ``connect``, with its default TLS context made once per process.

Without TLS options PyMySQL (1.2+) offers TLS when the server does ("preferred")
and builds a fresh default context for every connection: it parses the system's
CA bundle each time, about 40 ms of CPU per connection (bench/client_cost.py),
most of a client's own work for a connect-per-request client (a Lambda,
:meth:`client_connect`, verify's logins). That context is the same every time,
and a context may be shared by connections in any thread: it is built once
here, by PyMySQL itself. A connection with TLS options gets its own, as before.
Should PyMySQL stop calling the method this overrides, connections simply build
their own context again.
"""

from __future__ import annotations

import threading
from typing import Any

import pymysql.connections

__all__ = ["connect"]


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    def _create_ssl_ctx(self, sslp: Any) -> Any:
        if isinstance(sslp, dict) and not sslp:
            return _preferred(super()._create_ssl_ctx)
        return super()._create_ssl_ctx(sslp)


_made: list[Any] = []
_lock = threading.Lock()


def _preferred(create: Any) -> Any:
    """The context PyMySQL makes for "preferred" TLS: made by *create* the first time."""
    with _lock:
        if not _made:
            _made.append(create({}))
        return _made[0]


def connect(**kwargs: Any) -> Any:
    """A PyMySQL connection (``pymysql.connect``'s arguments)."""
    return _Connection(**kwargs)
