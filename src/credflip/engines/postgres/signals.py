"""What PostgreSQL can show the drain, read through the admin connection.

PostgreSQL keeps no per-user count of logins. ``pg_stat_statements`` counts
statements per *current* user, and credflip's sessions switch to the group
role at login, so the drain first makes the old user's new logins run as
itself (:func:`watch_statements`); from then on every statement such a login
runs is counted under the old user. What stays invisible: a login that runs
no statement at all.

The fingerprint of the count is the old user's whole set of entries (database,
query id, top level, calls, total execution time, and on 17+ the entry's
creation time), so a new entry, a grown count, an evicted entry and a
re-created one all differ (one evicted and re-created between two samples
with the same count still differs by its execution time). The last reset
time (``pg_stat_statements_info``, 14+) is part of it too: a reset may hide a
use made just before it. The server-wide count of evictions is not: other
users' churn would look like use of this one, and the drain would never
settle; an eviction of one of the old user's own entries is a change of its
set, counted once (its last use may have come just before).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ...errors import EngineError
from ..base import PooledBackend, Signal
from . import counting
from .query_text import safe_text

__all__ = [
    "AURORA_MEMBERS_SQL",
    "POOLED",
    "SESSIONS_SQL",
    "STARTED_SQL",
    "Statements",
    "find_statements",
]

Run = Callable[..., list[tuple[Any, ...]]]

# By client address, application and database: how many, since when (the
# oldest), for how long all of them have been idle (NULL while one is not), and
# each one's pid and when it last changed state (began or ended a statement, logged in).
SESSIONS_SQL = (
    "SELECT coalesce(host(client_addr), CASE WHEN client_port = -1 THEN 'local' "
    "ELSE 'hidden' END), coalesce(application_name, ''), count(*), coalesce(datname, ''), "
    "extract(epoch FROM min(backend_start))::float8, "
    "CASE WHEN bool_and(state IS NOT DISTINCT FROM 'idle') THEN "
    "greatest(0, extract(epoch FROM clock_timestamp() - max(state_change)))::float8 END, "
    "array_agg(pid ORDER BY pid), array_agg(coalesce(extract(epoch FROM "
    "greatest(state_change, backend_start))::float8, 0) ORDER BY pid) "
    "FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid() {pooled}"
    "GROUP BY 1, 2, 4 ORDER BY 3 DESC, 1, 2, 4"
)

# A pooler's server connections, by backend pid and the port they come from (-1
# over a Unix socket, as pg_stat_activity says): two arrays, pids and ports.
POOLED = "(pid, coalesce(client_port, -1)) IN (SELECT * FROM unnest(%s::int[], %s::int[])) "


def pooled_params(pooled: Collection[PooledBackend]) -> list[list[int]]:
    """The two arrays :data:`POOLED` takes."""
    ordered = sorted(pooled, key=lambda b: (b.pid, b.port or -1))
    return [[b.pid for b in ordered], [-1 if b.port is None else b.port for b in ordered]]


def sessions_query(user: str, pooled: Collection[PooledBackend]) -> tuple[str, list[Any]]:
    """:data:`SESSIONS_SQL` and its parameters: *user*'s sessions but those in *pooled*."""
    if not pooled:
        return SESSIONS_SQL.format(pooled=""), [user]
    return SESSIONS_SQL.format(pooled=f"AND NOT {POOLED}"), [user, *pooled_params(pooled)]


#: When the server (re)started, wall clock.
STARTED_SQL = "SELECT extract(epoch FROM pg_postmaster_start_time())::float8"

#: How many of a user's grown statements an observation carries, and how much of each text.
TOP_STATEMENTS = 5
QUERY_CHARS = 80

# As AWS's own drivers read the topology: rows not refreshed for five minutes
# belong to instances that are gone.
AURORA_MEMBERS_SQL = (
    "SELECT server_id FROM aurora_replica_status() "
    "WHERE session_id = 'MASTER_SESSION_ID' OR last_update_timestamp IS NULL "
    "OR extract(epoch FROM (now() - last_update_timestamp)) <= 300 ORDER BY 1"
)

#: The columns that name an entry of pg_stat_statements (besides the user).
ENTRY_KEY = frozenset({"dbid", "queryid", "toplevel", "stats_since"})

SIGNAL = "pg_stat_statements"
EVICTIONS = "pg_stat_statements reset"


@dataclass(frozen=True)
class Statements:
    """Where pg_stat_statements lives in the admin's database, and what it offers."""

    schema: str
    columns: tuple[str, ...]
    has_info: bool

    def fingerprint(self, run: Run, user: str) -> dict[str, Hashable]:
        """The counters of *user* as the drain compares them between samples."""
        query = sql.SQL(
            "SELECT {} FROM {}.pg_stat_statements(false) "
            "WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = %s)"
        ).format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in self.columns),
            sql.Identifier(self.schema),
        )
        rows = run(query, [user])
        out: dict[str, Hashable] = {SIGNAL: tuple(sorted(tuple(map(str, r)) for r in rows))}
        if self.has_info:
            info = run(
                sql.SQL("SELECT stats_reset::text FROM {}.pg_stat_statements_info").format(
                    sql.Identifier(self.schema)
                )
            )
            out[EVICTIONS] = (info[0][0] if info else "",)
        return out

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns that name an entry (the others count)."""
        return tuple(c for c in self.columns if c in ENTRY_KEY)

    def calls(self, fingerprint: Hashable) -> dict[tuple[str, ...], int]:
        """Calls by entry (its :attr:`keys` columns) in a :meth:`fingerprint`."""
        at = self.columns.index("calls")
        key = [self.columns.index(c) for c in self.keys]
        rows: Iterable[tuple[str, ...]] = fingerprint  # type: ignore[assignment]
        return {tuple(row[i] for i in key): int(row[at]) for row in rows}

    def texts(
        self, run: Run, user: str, entries: Collection[tuple[str, ...]]
    ) -> dict[tuple[str, ...], str]:
        """The query texts of *user*'s *entries* (keys of :meth:`calls`): whitespace
        collapsed, literals blanked, cut at ``QUERY_CHARS``.

        Without ``pg_read_all_stats`` the server shows ``<insufficient
        privilege>`` instead of the text: kept as it is.
        """
        keys = list(self.keys)
        at = keys.index("queryid") if "queryid" in keys else None
        ids = {e[at] for e in entries} if at is not None else set()
        queryids = sorted(int(q) for q in ids if q.lstrip("-").isdigit())
        query = sql.SQL(
            "SELECT {}, left(btrim(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g')), %s) "
            "FROM {}.pg_stat_statements(true) "
            "WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = %s)"
            + (" AND queryid = ANY(%s)" if queryids else "")
        ).format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in keys),
            sql.Identifier(self.schema),
        )
        rows = run(query, [QUERY_CHARS, user, *([queryids] if queryids else [])])
        wanted = set(entries)
        out: dict[tuple[str, ...], str] = {}
        for row in rows:
            entry = tuple(str(v) for v in row[:-1])
            if entry in wanted:
                out[entry] = safe_text(str(row[-1]))
        return out


def grown(
    before: Mapping[tuple[str, ...], int], after: Mapping[tuple[str, ...], int]
) -> dict[tuple[str, ...], int]:
    """Calls made between two readings of :meth:`Statements.calls`, by entry.

    An entry in both: the difference (its whole count when it went down: a
    reset, or evicted and made again). An entry new since: all its calls.
    """
    out: dict[tuple[str, ...], int] = {}
    for entry, calls in after.items():
        was = before.get(entry, 0)
        more = calls - was if calls >= was else calls
        if more > 0:
            out[entry] = more
    return out


def extension_state(run: Run) -> tuple[bool, str | None]:
    """Whether pg_stat_statements is preloaded, and the schema it was created in (or None)."""
    rows = run(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    )
    # The library defines its settings only where it is loaded.
    loaded = bool(run("SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.max'"))
    return loaded, str(rows[0][0]) if rows else None


def find_statements(run: Run, database: str, admin: str) -> tuple[Signal, Statements | None]:
    """The pg_stat_statements signal of this server; the source when it is usable (it may
    still count nothing now and then: :func:`~.counting.server_gap`, at each sample)."""
    loaded, schema = extension_state(run)
    what = "statements per user: sees logins that ran a statement"
    if not loaded:
        return Signal(
            SIGNAL,
            cumulative=True,
            available=False,
            statements=True,
            detail="add pg_stat_statements to shared_preload_libraries and restart the server "
            "(RDS/Aurora: it is in the DB parameter group by default), then CREATE EXTENSION "
            f"pg_stat_statements in database {database}",
        ), None
    if schema is None:
        return Signal(
            SIGNAL,
            cumulative=True,
            available=False,
            statements=True,
            detail=f"preloaded but not created: as a superuser (RDS/Aurora: the master user) "
            f"run CREATE EXTENSION pg_stat_statements in database {database}",
        ), None
    gap = counting.server_gap(run, admin=admin, database=database)
    if gap is not None:
        return Signal(SIGNAL, cumulative=True, available=False, statements=True, detail=gap), None
    columns = [
        str(r[0])
        for r in run(
            "SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND "
            "attrelid = to_regclass(quote_ident(%s) || '.pg_stat_statements') "
            "AND attname IN ('dbid', 'queryid', 'toplevel', 'calls', 'stats_since', "
            "'total_exec_time', 'total_time')",
            [schema],
        )
    ]
    info = run("SELECT to_regclass(quote_ident(%s) || '.pg_stat_statements_info')", [schema])
    source = Statements(
        schema=schema,
        columns=tuple(sorted(columns)),
        has_info=bool(info and info[0][0]),
    )
    if "calls" not in columns:
        raise EngineError(f"{schema}.pg_stat_statements has no calls column: update the extension")
    return Signal(SIGNAL, cumulative=True, available=True, detail=what, statements=True), source


def role_settings(run: Run, user: str) -> list[tuple[str, str]]:
    """``(database or '', value)`` of every ``role`` setting of *user*."""
    rows = run(
        "SELECT coalesce(d.datname, ''), c FROM pg_db_role_setting s "
        "LEFT JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c "
        "WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = %s) AND c LIKE 'role=%%'",
        [user],
    )
    return [(str(db), str(item).partition("=")[2]) for db, item in rows]


def watch_problem(run: Run, user: str, group: str | None) -> str | None:
    """Why *user*'s logins cannot be made to count as its own, or None.

    With a *group*, the drain resets *user*'s own ``role`` setting (the group)
    at the switch; the settings of every role, and its own for one database,
    stay. Without one, its own setting stays too.
    """
    settings = counting.settings_of(run, user)
    problems = [*_own_role_problems(run, settings, user, group)]
    problems += counting.setting_problems(settings, user, watched=group is not None)
    return "; ".join(problems) or None


def _own_role_problems(
    run: Run, settings: dict[counting.Key, dict[str, str]], user: str, group: str | None
) -> list[str]:
    """What *user*'s own ``role`` settings keep the drain from counting, with the fix."""
    own = {db: v["role"] for (mine, db), v in settings.items() if mine and "role" in v}

    def counted(target: str) -> bool:
        return target.strip().lower() == "none" or target == user

    problems = [
        f"{user!r} has a per-database role setting, so its sessions run as another role and "
        f"pg_stat_statements cannot tell them apart; set the role for all databases instead: "
        f"run {counting.reset((True, db), user, 'role')}"
        for db, target in sorted(own.items())
        if db and (group is not None or not counted(target))
    ]
    target = own.get("")
    if problems or target is None:
        return problems
    if group is None:
        if counted(target):
            return []
        return [
            f"{user!r} logs in as role {target!r} (its role setting), so pg_stat_statements "
            f"counts its statements for that role: run {counting.reset((True, ''), user, 'role')}"
        ]
    if target != group:
        return [
            f"{user!r} logs in as role {target!r} (its role setting), not as the group "
            f"{group!r}, so pg_stat_statements counts its statements for that role"
        ]
    rows = run("SELECT pg_has_role(%s, %s, 'USAGE')", [user, group])
    if not rows or not rows[0][0]:
        return [
            f"{user!r} does not inherit the rights of {group!r} (NOINHERIT), so its logins "
            f"cannot run as itself during the drain; make it INHERIT to let the drain count them"
        ]
    return []


def standby_gap(run: Run, position: str) -> int | None:
    """Bytes a standby must still replay to reach *position*; 0 on a primary."""
    rows = run(
        "SELECT pg_is_in_recovery(), "
        "greatest(0, pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()))::bigint",
        [position],
    )
    standby, gap = rows[0]
    if not standby:
        return 0
    return None if gap is None else int(gap)
