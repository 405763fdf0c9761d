"""The replicas MySQL and MariaDB send their binary log to, as the drain needs to know them.

Every connected replica has a binlog dump thread in the processlist (its
address, not the port it serves on: the admin's PROCESS right shows it). The
replicas' registrations (``SHOW REPLICAS`` on MySQL, ``SHOW SLAVE HOSTS`` on
MariaDB and older MySQL) add the port, and the host a replica reports with
``report_host``, where the admin may read them (MySQL: REPLICATION SLAVE;
MariaDB: REPLICATION MASTER ADMIN). Each replica is listed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import EngineError, InsufficientPrivilege
from ...replicas import addresses

__all__ = ["DUMP_THREADS_SQL", "known_replicas"]

Run = Callable[..., list[Any]]

DUMP_THREADS_SQL = (
    "SELECT HOST FROM information_schema.PROCESSLIST "
    "WHERE COMMAND IN ('Binlog Dump', 'Binlog Dump GTID') ORDER BY ID"
)


def known_replicas(run: Run, *, host: str, mariadb: bool) -> list[tuple[str, int | None]]:
    """``(host, port)`` of each replica of this server; the port None when not registered.

    *host* is where the admin reaches this server (a replica on its socket is there).
    """
    threads = [_thread_host(str(row[0] or ""), host) for row in run(DUMP_THREADS_SQL)]
    out: list[tuple[str, int | None]] = []
    for name, port in _registered(run, mariadb=mariadb):
        known = addresses(name)
        same = next((t for t in threads if t == name or addresses(t) & known), None)
        if same is not None:
            threads.remove(same)
        out.append((name, port))
    return out + [(t, None) for t in threads]


def _thread_host(text: str, here: str) -> str:
    """A processlist ``HOST`` (``addr:port``, or ``localhost`` on the socket) as a host."""
    head, sep, tail = text.rpartition(":")
    name = head if sep and tail.isdigit() else text
    return here if not name or (name == "localhost" and not sep) else name


def _registered(run: Run, *, mariadb: bool) -> list[tuple[str, int | None]]:
    """``(host, port)`` of the registered replicas that report a host; [] when not allowed."""
    statements = ["SHOW SLAVE HOSTS"] if mariadb else ["SHOW REPLICAS", "SHOW SLAVE HOSTS"]
    for statement in statements:
        try:
            rows = run(statement)
        except InsufficientPrivilege:
            return []
        except EngineError:
            continue  # SHOW REPLICAS before MySQL 8.0.22
        # Server_id, Host, Port, ... on every version.
        return [(str(r[1]), int(r[2]) or None) for r in rows if r[1]]
    return []
