"""The standbys PostgreSQL streams to, as the drain needs to know them.

``pg_stat_replication`` lists every WAL sender. Only physical ones that feed a
standby count: a logical walsender is connected to a database (a subscriber
is another server with its own users), and ``pg_basebackup`` or
``pg_receivewal`` copy WAL without serving anyone. The standby's address is
its connection's client address (its listening port is not known); a standby
connected over the primary's Unix socket runs on the primary's host. Without
``pg_read_all_stats`` the address is hidden, and the drain says which GRANT
makes it visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import InsufficientPrivilege

__all__ = ["REPLICAS_SQL", "known_replicas"]

Run = Callable[..., list[tuple[Any, ...]]]

REPLICAS_SQL = (
    "SELECT host(r.client_addr), r.state, coalesce(r.application_name, '') "
    "FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid "
    "WHERE a.datid IS NULL AND coalesce(r.application_name, '') "
    "NOT IN ('pg_basebackup', 'pg_receivewal') "
    "AND r.state IS DISTINCT FROM 'backup' ORDER BY r.pid"
)


def known_replicas(run: Run, *, host: str, admin: str) -> list[tuple[str, int | None]]:
    """``(client address, None)`` of each standby streaming from this server.

    *host* is where the admin reaches this server (a standby on its Unix
    socket is there); *admin* names the user in the GRANT to run when the
    addresses are hidden.
    """
    out: list[tuple[str, int | None]] = []
    hidden: list[str] = []
    for address, state, application in run(REPLICAS_SQL):
        if state is None:
            hidden.append(str(application) or "?")
        else:
            out.append((str(address) if address is not None else host, None))
    if hidden:
        raise InsufficientPrivilege(
            f"pg_stat_replication hides where {len(hidden)} standby(s) "
            f"({', '.join(sorted(set(hidden)))}) stream from, so the drain cannot tell whether "
            f"it watches them: GRANT pg_read_all_stats TO {admin} (or pg_monitor)"
        )
    return out
