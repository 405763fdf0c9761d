"""MySQL's and MariaDB's side of :mod:`..locks`: the session settings a plan runs with, and
who holds the lock a statement waits for.

``lock_wait_timeout`` bounds metadata-lock waits and ``innodb_lock_wait_timeout``
row-lock waits, in whole seconds. MariaDB's account statements wait for a lock
on the grant tables (a backup's ``LOCK TABLES`` or ``FLUSH TABLES WITH READ
LOCK``) without heeding ``lock_wait_timeout``: there ``max_statement_time``,
just under the client's guard, is what stops them. MySQL's
``max_execution_time`` covers SELECT only, so MySQL has no server-side
statement timeout for them.

The holder of a row lock comes from ``information_schema.INNODB_LOCK_WAITS``
(MariaDB, MySQL 5.7) or ``performance_schema.data_lock_waits`` (MySQL 8, which
dropped the other); of a metadata lock from MariaDB's ``METADATA_LOCK_INFO``
(when the plugin is installed) or MySQL's ``performance_schema.metadata_locks``,
and failing those the oldest open transactions. ``PROCESSLIST`` describes it,
and ``performance_schema.session_connect_attrs`` names its program
(``program_name``) when performance_schema is on; each source is optional: what
none of them shows is left unnamed (the plan still stops with its one line).
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from ...durations import format_duration
from ..base import Step
from ..locks import Blocker

__all__ = ["blockers", "kill_later", "limit_steps", "row_lock_source", "whole_seconds"]

Run = Callable[..., Sequence[Sequence[Any]]]


def whole_seconds(lock_timeout: float) -> str | None:
    """What to tell the operator when ``--lock-timeout`` is not whole seconds (the server
    cannot wait for a lock any shorter time than a second, nor a fraction more)."""
    if lock_timeout == math.ceil(lock_timeout):
        return None
    return (
        f"MySQL and MariaDB wait for locks in whole seconds: --lock-timeout "
        f"{format_duration(lock_timeout)} waits up to {math.ceil(lock_timeout)}s there"
    )


def limit_steps(lock_timeout: float, statement_timeout: float, *, mariadb: bool) -> list[Step]:
    """``SET SESSION`` of the lock timeouts (whole seconds, at least 1) and, on MariaDB,
    ``max_statement_time``."""
    lock = max(1, math.ceil(min(lock_timeout, statement_timeout)))
    if mariadb:
        return [
            Step(
                "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s, "
                "max_statement_time = %s",
                (lock, lock, Decimal(f"{statement_timeout:.3f}".rstrip("0").rstrip("."))),
            )
        ]
    return [Step("SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s", (lock, lock))]


# Metadata lock modes that stop a writer: a backup's LOCK TABLES ... READ, FLUSH TABLES
# WITH READ LOCK, an ALTER TABLE.
_STRONG = (
    "MDL_SHARED_READ_ONLY",
    "MDL_SHARED_NO_WRITE",
    "MDL_SHARED_NO_READ_WRITE",
    "MDL_SHARED_UPGRADABLE",
    "MDL_EXCLUSIVE",
    "MDL_BACKUP_FTWRL1",
    "MDL_BACKUP_FTWRL2",
    "MDL_BACKUP_WAIT_FLUSH",
    "MDL_BACKUP_BLOCK_DDL",
)

_ROW_LOCKS = """
SELECT b.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
WHERE r.trx_mysql_thread_id = %s
"""
# MySQL 8 has no INNODB_LOCK_WAITS: its lock waits are in performance_schema.
_MYSQL8_ROW_LOCKS = """
SELECT b.trx_mysql_thread_id FROM performance_schema.data_lock_waits w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID
WHERE r.trx_mysql_thread_id = %s
"""
# MariaDB lists granted metadata locks only: a holder of a lock that stops writers, or of
# one on a table the waiting statement opened (a grant table it waits to lock).
_MARIADB_METADATA = """
SELECT DISTINCT o.THREAD_ID FROM information_schema.METADATA_LOCK_INFO o
WHERE o.THREAD_ID <> %s AND (o.LOCK_MODE IN ({}) OR (
  o.LOCK_TYPE = 'Table metadata lock' AND EXISTS (
    SELECT 1 FROM information_schema.METADATA_LOCK_INFO m WHERE m.THREAD_ID = %s
    AND m.TABLE_SCHEMA = o.TABLE_SCHEMA AND m.TABLE_NAME = o.TABLE_NAME)))
"""
_MYSQL_METADATA = """
SELECT DISTINCT h.PROCESSLIST_ID FROM performance_schema.metadata_locks w
JOIN performance_schema.threads me ON me.THREAD_ID = w.OWNER_THREAD_ID
JOIN performance_schema.metadata_locks g ON g.OBJECT_TYPE = w.OBJECT_TYPE
  AND g.OBJECT_SCHEMA <=> w.OBJECT_SCHEMA AND g.OBJECT_NAME <=> w.OBJECT_NAME
  AND g.LOCK_STATUS = 'GRANTED' AND g.OWNER_THREAD_ID <> w.OWNER_THREAD_ID
JOIN performance_schema.threads h ON h.THREAD_ID = g.OWNER_THREAD_ID
WHERE w.LOCK_STATUS = 'PENDING' AND me.PROCESSLIST_ID = %s
"""
_OPEN_TRANSACTIONS = (
    "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX "
    "WHERE trx_mysql_thread_id <> %s ORDER BY trx_started"
)
_ROW_LOCK_WAIT = (
    "SELECT 1 FROM information_schema.INNODB_TRX "
    "WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'"
)
_DESCRIBE = (
    "SELECT p.ID, p.USER, p.HOST, p.COMMAND, p.STATE, "
    "TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) "
    "FROM information_schema.PROCESSLIST p "
    "LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
    "WHERE p.ID IN ({})"
)
_PROGRAMS = (
    "SELECT PROCESSLIST_ID, ATTR_VALUE FROM performance_schema.session_connect_attrs "
    "WHERE ATTR_NAME = 'program_name' AND PROCESSLIST_ID IN ({})"
)


def row_lock_source(server: str) -> str:
    """The query for the threads that hold a row lock thread %s waits for, on the server
    whose version string is *server* (``10.11.6-MariaDB``, ``8.0.36``)."""
    if "mariadb" in server.lower():
        return _ROW_LOCKS
    major = re.match(r"\d+", server)
    return _MYSQL8_ROW_LOCKS if major and int(major.group()) >= 8 else _ROW_LOCKS


def _rows(run: Run, query: str, args: Sequence[Any]) -> list[Sequence[Any]] | None:
    """*query*'s rows; None when the admin may not read that view or the server has none
    (each source but PROCESSLIST is optional)."""
    try:
        return list(run(query, list(args)))
    except Exception:
        return None


def _ids(run: Run, query: str, args: Sequence[Any]) -> list[int]:
    """Thread ids *query* returns; none when the view cannot be read."""
    return [int(row[0]) for row in _rows(run, query, args) or () if row[0] is not None]


def blockers(run: Run, thread: int, *, server: str) -> list[Blocker]:
    """The sessions thread *thread* waits for, when it waits for a lock now, on the server
    whose version string is *server*."""
    rows = run("SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = %s", [thread])
    state = str(rows[0][0] or "").lower() if rows else ""
    # A row lock wait shows as 'Updating', 'executing'...: InnoDB says it waits.
    row_wait = bool(_rows(run, _ROW_LOCK_WAIT, (thread,)))
    if not (state.startswith("waiting for") or row_wait):
        return []
    if "mariadb" in server.lower():
        metadata = _MARIADB_METADATA.format(", ".join(["%s"] * len(_STRONG)))
        metadata_args: Sequence[Any] = (thread, *_STRONG, thread)
    else:
        metadata, metadata_args = _MYSQL_METADATA, (thread,)
    ids = (_ids(run, row_lock_source(server), (thread,)) if row_wait else []) or _ids(
        run, metadata, metadata_args
    )
    if not ids and "metadata lock" in state:
        # Without a view of metadata locks: an open transaction holds them.
        ids = _ids(run, _OPEN_TRANSACTIONS, (thread,))
    ids = list(dict.fromkeys(i for i in ids if i != thread))
    if not ids:
        return []
    marks = ", ".join(["%s"] * len(ids))
    found = {int(row[0]): row for row in run(_DESCRIBE.format(marks), ids)}
    programs = _programs(run, ids, marks)
    return [_blocker(found[i], programs) for i in ids if i in found]


def _programs(run: Run, ids: list[int], marks: str) -> dict[int, str] | None:
    """Each thread's ``program_name``; None when performance_schema is off or unreadable
    (the program is unknown, not unnamed)."""
    on = _rows(run, "SELECT @@performance_schema", ())
    if not on or not int(on[0][0] or 0):
        return None
    rows = _rows(run, _PROGRAMS.format(marks), ids)
    return None if rows is None else {int(i): str(name or "") for i, name in rows}


def _blocker(row: Sequence[Any], programs: dict[int, str] | None) -> Blocker:
    thread, user, host, command, state, age = row
    if str(command) == "Sleep":
        # As PostgreSQL names it: a session that holds a lock and does nothing.
        what = "idle in transaction" if age is not None else "idle"
    else:
        what = ": ".join(str(p) for p in (command, state) if p)
    return Blocker(
        session=f"thread {thread}",
        user=str(user or "?"),
        application=None if programs is None else programs.get(int(thread), ""),
        state=what,
        open_for=None if age is None else float(age),
        end=f"KILL {int(thread)}",
        client=str(host or ""),
    )


def kill_later(connect: Callable[[], Any], thread: int) -> None:
    """``KILL QUERY`` *thread* from a new connection (``connect()``), in the background: the
    client gave up on its statement, which must not wait on (and run) in the server. A
    server too silent to answer holds up nobody."""

    def kill() -> None:
        with contextlib.suppress(Exception):
            conn = connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("KILL QUERY %s", (thread,))
            finally:
                conn.close()

    threading.Thread(target=kill, name="credflip-kill-query", daemon=True).start()
