"""What PgBouncer's ``SHOW CLIENTS`` and ``SHOW SERVERS`` say of one user (pure).

- Its **clients** are use: an application connected to PgBouncer as that user,
  whatever it is doing; grouped like a server's sessions (address,
  ``application_name``, database).
- Its **server connections** are not use by themselves: PgBouncer keeps them
  (``server_idle_timeout``, 600 s by default) after the last client left. They
  are the sessions the server sees of the user *through* PgBouncer
  (:class:`~credflip.engines.PooledBackend`: the backend's pid and the port the
  connection comes from), left out of the server's session view.
- A request on one of them is use, even by a client that connected and left
  between two samples: PgBouncer stamps ``request_time`` on a server connection
  whenever the server answers on it, but prints it to the second only; the
  server times the same requests to the microsecond (``state_change`` of those
  backends), which is what the drain compares.

PgBouncer's clock is read off the same ``SHOW CLIENTS``: the console's own
request is the latest one PgBouncer stamped (it dates the clients).

Each server connection is also told by what identifies it and when it last served
a request (:data:`SERVER_FIELDS`): the drain keeps a digest of each between two
runs (:mod:`credflip.drain.servers`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..engines.values import PooledBackend, SessionGroup, Sessions

__all__ = ["SERVER_FIELDS", "SIGNAL", "UserView", "parse_time", "user_view"]

#: The name of the pooler's cumulative signal, as the drain reports it.
SIGNAL = "pgbouncer server requests"
#: What ``SHOW SERVERS`` says of a server connection that tells it from any other
#: (its database, the server's address and port, the port it comes from, the
#: backend's pid, when it was opened) and that changes when it serves a request
#: (``request_time``, to the second); not its ``state``, which PgBouncer changes
#: by itself (an idle one becomes ``used`` after ``server_check_delay``).
SERVER_FIELDS = (
    "database", "addr", "port", "local_port", "remote_pid", "connect_time", "request_time"
)  # fmt: skip

_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?")

Row = Mapping[str, Any]


def parse_time(value: object) -> dt.datetime | None:
    """A time PgBouncer printed (``2026-11-30 02:55:02 UTC``, its own clock and zone),
    as a naive datetime; None when empty or unreadable. Times of one PgBouncer are
    only compared with each other."""
    match = _TIME.search(str(value or ""))
    if match is None:
        return None
    text = f"{match[1]} {match[2]}{match[3] or ''}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class UserView:
    """One user as PgBouncer shows it in one sample."""

    #: Its clients, grouped by address, application and database.
    clients: Sessions
    #: Its server connections, as the server sees them.
    backends: tuple[PooledBackend, ...]
    #: The newest request PgBouncer stamped on one of them (the pooler's clock).
    newest: dt.datetime | None
    #: The pooler's clock at this sample, to the second (None when unknown).
    now: dt.datetime | None
    #: Those of :attr:`backends` linked to a client now (``SHOW SERVERS`` state
    #: ``active``: a transaction, or a session in session pooling).
    linked: tuple[PooledBackend, ...] = ()
    #: Each of its server connections as :data:`SERVER_FIELDS` (text), without a pid too.
    servers: tuple[tuple[str, ...], ...] = ()


def user_view(
    user: str, clients: Iterable[Row], servers: Iterable[Row], *, wall_now: float
) -> UserView:
    """*user* in one sample of ``SHOW SERVERS`` and ``SHOW CLIENTS`` (read in that order),
    *wall_now* the time of this machine's clock when it was read."""
    client_rows = list(clients)
    # The console's own client is among them: its request is the latest stamp.
    stamps = [t for t in (parse_time(r.get("request_time")) for r in client_rows) if t]
    now = max(stamps, default=None)
    mine = [r for r in client_rows if r.get("user") == user]
    theirs = [r for r in servers if r.get("user") == user]
    newest = max(
        (t for t in (parse_time(r.get("request_time")) for r in theirs) if t), default=None
    )
    return UserView(
        clients=_groups(mine, now, wall_now),
        backends=_backends(theirs),
        newest=newest,
        now=now,
        linked=_backends(r for r in theirs if str(r.get("state") or "").startswith("active")),
        servers=tuple(tuple(str(r.get(k) or "") for k in SERVER_FIELDS) for r in theirs),
    )


def _backends(rows: Iterable[Row]) -> tuple[PooledBackend, ...]:
    return tuple(b for b in (_backend(r) for r in rows) if b is not None)


def _backend(row: Row) -> PooledBackend | None:
    """A server connection as the server sees it; None when PgBouncer does not know its pid."""
    try:
        pid = int(row.get("remote_pid") or 0)
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    unix = str(row.get("addr") or "").startswith("unix") or str(row.get("addr") or "") == ""
    try:
        port = None if unix else int(row.get("local_port") or 0) or None
    except (TypeError, ValueError):
        port = None
    return PooledBackend(pid, port)


def _groups(rows: list[Row], now: dt.datetime | None, wall_now: float) -> Sessions:
    """Clients grouped by address, application and database: how many, since when."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        key = (
            str(row.get("addr") or "local"),
            str(row.get("application_name") or ""),
            str(row.get("database") or ""),
        )
        groups.setdefault(key, []).append(row)
    out = []
    for (addr, app, database), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        starts = [t for t in (parse_time(r.get("connect_time")) for r in members) if t]
        started = None
        if starts and now is not None:
            # On this machine's clock: how long before the sample it connected.
            started = wall_now - max(0.0, (now - min(starts)).total_seconds())
        out.append(SessionGroup(addr, app, len(members), database=database, started=started))
    return Sessions(tuple(out))
