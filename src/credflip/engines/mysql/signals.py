"""What MySQL and MariaDB show the drain: the processlist and per-user login counts.

``performance_schema.accounts`` (MySQL 8, Aurora MySQL, MariaDB with
performance_schema) counts logins per account; MariaDB's ``USER_STATISTICS``
(``userstat=1``) per user. Both count at login, so a client that connected and
left between two samples still moved the count. Their fingerprints also hold
the user's statement counts (``USER_STATISTICS``' commands, performance_schema's
statement summary by user), updated as each statement ends: behind a pooler
that keeps the old user's connections open (RDS Proxy), a client reusing one
logs in no more, and only its statements show. Without ``PROCESS`` the admin
silently sees only its own rows in both the processlist and USER_STATISTICS.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any

from ...errors import EngineError
from ..base import SessionGroup, Signal

__all__ = [
    "PS",
    "US",
    "counters",
    "find_signals",
    "group_threads",
    "has_connect_attrs",
    "server_started",
    "sessions_sql",
]

PS = "performance_schema.accounts"
US = "user_statistics"
#: Statements per account (MySQL 8 and MariaDB with performance_schema).
STATEMENTS_TABLE = "performance_schema.events_statements_summary_by_user_by_event_name"

#: What lets an admin set a global variable (MariaDB: SUPER; MySQL 8 also
#: SYSTEM_VARIABLES_ADMIN).
SET_GLOBAL_PRIVILEGES = ("ALL PRIVILEGES", "SUPER", "SYSTEM_VARIABLES_ADMIN")
ENABLE_USERSTAT = "SET GLOBAL userstat = ON"
#: How userstat outlives a restart.
KEEP_USERSTAT = (
    "add userstat = ON under [mysqld] in the server's option file (RDS for MariaDB: set "
    "userstat to 1 in the DB parameter group)"
)
USERSTAT_ENABLED = (
    f"turned on MariaDB's per-user login counter ({ENABLE_USERSTAT}); it is not kept across a "
    f"restart: {KEEP_USERSTAT}"
)

#: Why userstat counts nothing, and how to turn it on.
USERSTAT_OFF = (
    f"userstat is OFF: as an admin with SUPER run {ENABLE_USERSTAT}, and {KEEP_USERSTAT} to "
    f"keep it after a restart"
)

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
            detail="add performance_schema = ON under [mysqld] in the server's option file and "
            "restart it (RDS/Aurora: set performance_schema to 1 in the DB parameter group and "
            "reboot)",
        )
    else:
        try:
            run("SELECT 1 FROM performance_schema.accounts LIMIT 0")
            statements = _counts_statements(run)
            ps = Signal(
                PS,
                cumulative=True,
                available=True,
                detail="logins and statements per account" if statements else "logins per account",
                statements=statements,
            )
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
        detail = (
            ("logins and statements per user" if process else need_process)
            if userstat
            else USERSTAT_OFF
        )
        out.append(
            Signal(
                US, cumulative=True, available=userstat and process, detail=detail, statements=True
            )
        )
    return out


def _counts_statements(run: Run) -> bool:
    """Whether the admin may read the statements per account, and the server counts them
    (statement instruments on, and per-thread aggregation: ``thread_instrumentation``)."""
    try:
        run(f"SELECT 1 FROM {STATEMENTS_TABLE} LIMIT 0")
        rows = run(
            "SELECT (SELECT COUNT(*) FROM performance_schema.setup_consumers "
            "WHERE NAME = 'thread_instrumentation' AND ENABLED = 'YES') * "
            "(SELECT COUNT(*) FROM performance_schema.setup_instruments "
            "WHERE NAME = 'statement/sql/select' AND ENABLED = 'YES')"
        )
    except EngineError:
        return False
    return bool(rows and rows[0][0])


def counters(
    run: Run, user: str, available: set[str], statements: Collection[str] = ()
) -> tuple[dict[str, Hashable], dict[str, str]]:
    """Fingerprints of *user*'s login counts in the *available* signals, with its statement
    counts in those of them that also count *statements* (a client that reuses a
    connection a pooler keeps open logs in no more: only its statements show); and those
    of the signals that count nothing now (with how to turn them on again).

    ``userstat`` is read with the count: ``SET GLOBAL userstat = OFF`` stops the count
    and leaves the rows as they were, so a count read alone would look quiet.
    """
    out: dict[str, Hashable] = {}
    silent: dict[str, str] = {}
    if US in available:
        # One row, userstat and the user's counts (NULL without a row yet) together.
        commands = "s.SELECT_COMMANDS + s.UPDATE_COMMANDS + s.OTHER_COMMANDS"
        on, count, ran = run(
            f"SELECT @@userstat, s.TOTAL_CONNECTIONS, {commands if US in statements else 0} "
            "FROM (SELECT 1) AS one "
            "LEFT JOIN information_schema.USER_STATISTICS AS s ON s.USER = %s LIMIT 1",
            [user],
        )[0]
        if not on:
            silent[US] = USERSTAT_OFF
        elif count is None:
            out[US] = None
        else:
            out[US] = (int(count), int(ran)) if US in statements else int(count)
    if PS in available:
        row = run(
            "SELECT COALESCE(SUM(TOTAL_CONNECTIONS), 0), COUNT(*) "
            "FROM performance_schema.accounts WHERE USER = %s",
            [user],
        )[0]
        done = (
            run(
                f"SELECT COALESCE(SUM(COUNT_STAR), 0) FROM {STATEMENTS_TABLE} WHERE USER = %s",
                [user],
            )[0][0]
            if PS in statements
            else 0
        )
        # When the accounts table is full, new accounts go uncounted ("lost"):
        # a rise there may be this user. The count is server-wide, so other
        # users' churn moves it too: left out while USER_STATISTICS counts
        # every login of the user anyway.
        lost = (
            [] if US in out else run("SHOW GLOBAL STATUS LIKE 'Performance_schema_accounts_lost'")
        )
        out[PS] = (int(row[0]), int(row[1]), str(lost[0][1]) if lost else "", int(done))
    return out, silent


def sessions_sql(*, program: bool) -> str:
    """The processlist of one user (``%s``), a row per thread: its id, client host,
    program and database, and how long it has slept (NULL while busy, or asleep
    inside an open InnoDB transaction: ending it would lose its work; InnoDB
    refreshes ``INNODB_TRX`` only after 0.1 s without a read of it, so the drain's
    200 ms samples see a transaction at most one sample late). *program* reads
    ``program_name`` from performance_schema's connection attributes (what the
    client says it is); without it the program is ''. :func:`group_threads` groups them.
    """
    attrs = (
        "LEFT JOIN performance_schema.session_connect_attrs a "
        "ON a.PROCESSLIST_ID = p.ID AND a.ATTR_NAME = 'program_name' "
        if program
        else ""
    )
    name = "COALESCE(a.ATTR_VALUE, '')" if program else "''"
    return (
        # HOST is addr:port, IPv6 without brackets: cut at the last colon only.
        "SELECT p.ID, IF(LOCATE(':', p.HOST) = 0, p.HOST, "
        "LEFT(p.HOST, LENGTH(p.HOST) - LOCATE(':', REVERSE(p.HOST)))), "
        f"{name}, COALESCE(p.DB, ''), "
        # TIME is the time in the thread's current state, not since it connected.
        "IF(p.COMMAND <> 'Sleep' OR t.trx_id IS NOT NULL, NULL, p.TIME) "
        "FROM information_schema.PROCESSLIST p "
        "LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
        f"{attrs}"
        "WHERE p.USER = %s AND p.ID <> CONNECTION_ID()"
    )


def group_threads(
    rows: Iterable[Sequence[Any]], named: Mapping[int, str]
) -> tuple[list[SessionGroup], dict[int, str]]:
    """The threads of :func:`sessions_sql` by client host, program and database, most
    first; and the program of each thread that has one, for the next call (*named*).

    MariaDB drops a closing thread's connection attributes a moment before the
    processlist lets it go: a thread listed without a program keeps the one it was
    listed with before, or it would look like another client.
    """
    idle: dict[tuple[str, str, str], list[float | None]] = {}
    names: dict[int, str] = {}
    for thread, host, program, db, slept in rows:
        name = str(program or "") or named.get(int(thread), "")
        if name:
            names[int(thread)] = name
        key = (str(host or "local"), name, str(db or ""))
        idle.setdefault(key, []).append(None if slept is None else float(slept))
    groups = [
        SessionGroup(host, name, len(times), database=db, idle_for=_all_idle(times))
        for (host, name, db), times in idle.items()
    ]
    groups.sort(key=lambda g: (-g.count, g.client, g.application, g.database))
    return groups, names


def _all_idle(times: Sequence[float | None]) -> float | None:
    """How long every thread has slept; None while one is busy."""
    slept = [t for t in times if t is not None]
    return min(slept) if len(slept) == len(times) else None


def has_connect_attrs(run: Run) -> bool:
    """Whether performance_schema is on and shows the admin the clients' connection attributes."""
    if not run("SELECT @@performance_schema")[0][0]:
        return False
    try:
        run("SELECT 1 FROM performance_schema.session_connect_attrs LIMIT 0")
    except EngineError:
        return False
    return True


def server_started(run: Run) -> float | None:
    """When the server (re)started, wall clock, to the second (``UNIX_TIMESTAMP() - Uptime``)."""
    uptime = run("SHOW GLOBAL STATUS LIKE 'Uptime'")
    if not uptime:
        return None
    now = run("SELECT UNIX_TIMESTAMP()")[0][0]
    return float(now) - float(uptime[0][1])
