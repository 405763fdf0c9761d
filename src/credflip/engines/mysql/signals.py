"""What MySQL and MariaDB show the drain: the processlist and per-user login counts.

``performance_schema.accounts`` (MySQL 8, Aurora MySQL, MariaDB with
performance_schema) counts logins per account; MariaDB's ``USER_STATISTICS``
(``userstat=1``) per user. Both count at login, so a client that connected and
left between two samples still moved the count. Without ``PROCESS`` the admin
silently sees only its own rows in both the processlist and USER_STATISTICS.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ...errors import EngineError
from ..base import Signal

__all__ = ["PS", "US", "counters", "find_signals"]

PS = "performance_schema.accounts"
US = "user_statistics"

Run = Callable[..., list[Any]]


def find_signals(run: Run, *, admin: str, privileges: str, mariadb: bool) -> list[Signal]:
    """The processlist and the cumulative counts, available or not (with how to enable)."""
    process = "ALL PRIVILEGES" in privileges or "PROCESS" in privileges
    need_process = f"GRANT PROCESS ON *.* TO {admin} (without it the view is silently empty)"
    out = [
        Signal(
            "processlist",
            cumulative=False,
            available=process,
            detail="open sessions" if process else need_process,
        )
    ]
    if not run("SELECT @@performance_schema")[0][0]:
        ps = Signal(
            PS,
            cumulative=True,
            available=False,
            detail="set performance_schema=ON in the server's configuration and restart "
            "(RDS/Aurora: the DB parameter group)",
        )
    else:
        try:
            run("SELECT 1 FROM performance_schema.accounts LIMIT 0")
            ps = Signal(PS, cumulative=True, available=True, detail="logins per account")
        except EngineError:
            ps = Signal(
                PS,
                cumulative=True,
                available=False,
                detail=f"GRANT SELECT ON performance_schema.* TO {admin}",
            )
    out.append(ps)
    if mariadb:
        userstat = bool(run("SELECT @@userstat")[0][0])
        if not userstat:
            detail = (
                "SET GLOBAL userstat = 1, and userstat = 1 in the server's configuration to "
                "keep it after a restart (RDS: the DB parameter group)"
            )
        else:
            detail = "logins per user" if process else need_process
        out.append(Signal(US, cumulative=True, available=userstat and process, detail=detail))
    return out


def counters(run: Run, user: str, available: set[str]) -> dict[str, Hashable]:
    """Fingerprints of *user*'s login counts in the *available* signals."""
    out: dict[str, Hashable] = {}
    if PS in available:
        row = run(
            "SELECT COALESCE(SUM(TOTAL_CONNECTIONS), 0), COUNT(*) "
            "FROM performance_schema.accounts WHERE USER = %s",
            [user],
        )[0]
        # When the accounts table is full, new accounts go uncounted ("lost"):
        # a rise there may be this user.
        lost = run("SHOW GLOBAL STATUS LIKE 'Performance_schema_accounts_lost'")
        out[PS] = (int(row[0]), int(row[1]), str(lost[0][1]) if lost else "")
    if US in available:
        rows = run(
            "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS WHERE USER = %s",
            [user],
        )
        out[US] = int(rows[0][0]) if rows else None
    return out
