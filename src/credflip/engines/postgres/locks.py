"""PostgreSQL's side of :mod:`..locks`: the session settings a plan's connections run with,
who holds the lock a statement waits for (``pg_blocking_pids``), and
:class:`PgPlanRunner`, which runs a plan's steps with both."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from psycopg import sql

from ...errors import LockTimeout
from ..base import Step
from ..locks import Blocker, BlockerWatch, StatementWaited, server_timeout
from .connection import PgConnection

__all__ = ["BLOCKERS_SQL", "PgPlanRunner", "blockers", "limit_steps"]


def _ms(seconds: float) -> sql.Literal:
    return sql.Literal(f"{max(1, round(seconds * 1000))}ms")


def limit_steps(lock_timeout: float, statement_timeout: float) -> list[Step]:
    """``SET lock_timeout`` and ``SET statement_timeout`` for the session (never longer
    a lock wait than a statement)."""
    return [
        Step(sql.SQL("SET lock_timeout = {}").format(_ms(min(lock_timeout, statement_timeout)))),
        Step(sql.SQL("SET statement_timeout = {}").format(_ms(statement_timeout))),
    ]


#: The sessions session %s waits for: those not waiting for a lock themselves (the
#: holders) first, then by the age of their transactions. Without pg_read_all_stats
#: the admin sees only pid and user of other users' sessions.
BLOCKERS_SQL = """
SELECT a.pid, a.usename, a.application_name, a.state,
       extract(epoch FROM now() - a.xact_start)::float8
FROM pg_stat_activity a
WHERE a.pid = ANY (pg_blocking_pids(%s))
ORDER BY a.wait_event_type IS NOT DISTINCT FROM 'Lock', a.xact_start NULLS LAST, a.pid
"""


def blockers(run: Callable[..., Sequence[Sequence[Any]]], pid: int) -> list[Blocker]:
    """The sessions backend *pid* waits for, as :data:`BLOCKERS_SQL` finds them."""
    return [
        Blocker(
            session=f"pid {holder}",
            user=str(user or "?"),
            application=str(application or ""),
            state=str(state or ""),
            open_for=None if age is None else float(age),
            end=f"SELECT pg_terminate_backend({int(holder)})",
        )
        for holder, user, application, state, age in run(BLOCKERS_SQL, [pid])
    ]


class PgPlanRunner(PgConnection):
    """Where a plan's steps run: each database's connection kept for the whole plan (its
    session settings hold for every step, and are set again on a connection that replaced
    a broken one), and who blocks a step named while it waits."""

    def _execute(self, step: Step, watch: BlockerWatch) -> None:
        with self._database(self._connection_of(step)) as conn:
            self._settle(step, conn, lambda s: self._run(s.sql, s.params, conn=conn))
            with watch.during(conn.info.backend_pid) as seen:
                try:
                    self._run(step.sql, step.params, conn=conn, hint=step.hint)
                except LockTimeout as exc:
                    raise StatementWaited(str(exc), list(seen)) from exc

    def _connection_of(self, step: Step) -> str:
        return step.database or self._main

    @contextlib.contextmanager
    def _plan_scope(self) -> Iterator[None]:
        self._held = {}
        try:
            yield
        finally:
            held, self._held = self._held, None
            for conn in held.values():
                conn.close()

    def _limit_steps(self) -> list[Step]:
        return limit_steps(self.lock_wait.timeout, server_timeout(self.statement_timeout))

    def _watch_connection(self) -> Any:
        return self._connect(self.admin_url, what="the admin (to name a lock's holder)")

    def _blockers(self, conn: Any, waiter: Any) -> list[Blocker]:
        return blockers(functools.partial(self._run, conn=conn), int(waiter))
