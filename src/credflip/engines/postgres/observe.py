"""What PostgreSQL shows of a user's use: its sessions (and ending them) and the
``pg_stat_statements`` counts the drain watches (the standbys are :mod:`.standbys`)."""

from __future__ import annotations

from collections.abc import Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ...errors import EngineError
from ..base import Observation, PooledBackend, SessionGroup, Sessions, Signal, Step
from ..connector import CONNECTIONS
from . import catalog, counting, plan
from . import pooled as pooled_activity
from . import signals as pg_signals
from .admin_rights import PgAdminRights
from .growth import StatementGrowth
from .pooled import PooledActivity

__all__ = ["PgObserver"]


@dataclass
class PgObserver(PgAdminRights):
    """Sessions, and the drain's signals and watch."""

    _growth: StatementGrowth = field(default_factory=StatementGrowth, repr=False)
    _pooled: PooledActivity = field(default_factory=PooledActivity, repr=False)

    # -- sessions ----------------------------------------------------------

    def sessions(self, user: str, *, pooled: Collection[PooledBackend] = ()) -> Sessions:
        """Sessions of *user* in ``pg_stat_activity``, by client address, application,
        database; a pooler's server connections (*pooled*) left out."""
        rows = self._run(*pg_signals.sessions_query(user, pooled))
        return Sessions(
            tuple(
                SessionGroup(
                    str(c),
                    str(a),
                    int(n),
                    database=str(d),
                    started=None if t is None else float(t),
                    idle_for=None if idle is None else float(idle),
                    changes=tuple(zip(map(int, pids), map(float, changed), strict=True)),
                )
                for c, a, n, d, t, idle, pids, changed in rows
            )
        )

    def terminate(self, user: str, *, only: Collection[PooledBackend] | None = None) -> int:
        """``pg_terminate_backend`` every session of *user* (or of those in *only* that
        are idle, in no statement or transaction: a pooler's connection that is not
        serving a client), waiting until each has exited.

        The signal alone returns before the backend is gone; from 14 on the
        function waits (up to 5 s each) so the count is of sessions that ended.
        """
        if only is not None and not only:
            return 0
        wait = ", 5000" if int(self.conn.info.server_version) >= 140000 else ""
        which = "" if only is None else f"AND state = 'idle' AND {pg_signals.POOLED}"
        rows = self._run(
            f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid{wait})) "
            f"FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid() {which}",
            [user, *([] if only is None else pg_signals.pooled_params(only))],
            hint=f"grant it pg_signal_backend: GRANT pg_signal_backend TO {self.admin_url.user}",
        )
        return int(rows[0][0])

    # -- the drain ---------------------------------------------------------

    def _statements_source(self) -> tuple[Signal, pg_signals.Statements | None]:
        """Found once per admin connection: a restart ends it, and may change the preload."""
        return self.per_connection(
            "statements",
            lambda: pg_signals.find_statements(self._run, self._main, self.admin_url.user),
        )

    def signals(self) -> list[Signal]:
        """``pg_stat_activity`` (open sessions) and ``pg_stat_statements`` (cumulative)."""
        return [
            Signal("pg_stat_activity", cumulative=False, available=True, detail="open sessions"),
            self._statements_source()[0],
        ]

    def observe(self, user: str, *, pooled: Collection[PooledBackend] | None = None) -> Observation:
        """Open sessions of *user* (but *pooled*) and, where available, its
        pg_stat_statements entries; behind a pooler (*pooled* not None) the newest
        request on its connections of *user* too (:mod:`.pooled`).

        The counters are read before the sessions (:class:`~credflip.engines.Observation`)."""
        started = float(
            self.per_connection("started", lambda: self._run(pg_signals.STARTED_SQL)[0][0])
        )
        number = self.per_connection("number", lambda: next(CONNECTIONS))
        counters: dict[str, Hashable] = {}
        if pooled is not None:
            counters[pooled_activity.SIGNAL] = self._pooled.newest(self._run, user, pooled)
        signal, source = self._statements_source()
        # A reload may have stopped the count since (track = none, compute_query_id = off).
        gap = (
            signal.detail
            if source is None
            else counting.server_gap(self._run, admin=self.admin_url.user, database=self._main)
        )
        extra: dict[str, Any]
        if source is None or gap is not None:
            extra = {"silent": {pg_signals.SIGNAL: gap or ""}}
        else:
            counters.update(source.fingerprint(self._run, user))
            grown = self._growth.grown(source, self._run, user, counters[pg_signals.SIGNAL])
            extra = {"statements": grown}
        sessions = self.sessions(user, pooled=pooled or ())
        return Observation(sessions, counters, started=started, connection=number, **extra)

    def server_time(self) -> float:
        """``clock_timestamp()``: now on the server's clock."""
        return float(self._run("SELECT extract(epoch FROM clock_timestamp())::float8")[0][0])

    def enable_signals(self) -> list[str]:
        """``CREATE EXTENSION pg_stat_statements`` when it is preloaded and the admin may (a
        plan of its own: with the lock and statement timeouts of every plan)."""
        loaded, schema = pg_signals.extension_state(self._run)
        if not loaded or schema is not None:
            return []
        try:
            self.execute([Step(sql.SQL("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))])
        except EngineError:
            return []  # signals() says who must run it
        self._memo.pop("statements", None)
        return [f"created extension pg_stat_statements in database {self._main}"]

    def count_problem(self, user: str, group: str | None) -> str | None:
        """Why *user*'s statements cannot be told apart from the other color's."""
        return pg_signals.watch_problem(self._run, user, group)

    def plan_watch(self, user: str, group: str | None) -> list[Step]:
        """Let *user*'s new logins run as itself, so pg_stat_statements counts them as its own.

        Its sessions normally switch to the group role at login, where both
        colors look the same. Only run once the pointer names the other
        color, and only when *user* inherits the group's rights.
        """
        if group is None or self.count_problem(user, group) is not None:
            return []
        if pg_signals.role_settings(self._run, user):
            return [plan.set_role_setting(user, None)]
        return []

    def end_watch(self, user: str, group: str | None) -> None:
        """Restore *user*'s ``role`` setting and give the group what late sessions created."""
        self.execute(self._plan_end_watch(user, group, watched=None))

    def _plan_end_watch(self, user: str, group: str | None, *, watched: bool | None) -> list[Step]:
        if group is None or not self._exists(user):
            return []
        steps: list[Step] = []
        has_setting = (
            bool(pg_signals.role_settings(self._run, user)) if watched is None else not watched
        )
        if not has_setting:
            steps.append(plan.set_role_setting(user, group))
        if catalog.owns_objects(self._run, user):
            before, after = self._acting_as([user], to=group)
            steps += before
            for dbname in catalog.databases_of(self._run, [user], deptypes=("o",), main=self._main):
                steps.append(plan.reassign_owned([user], group, dbname))
            steps += [step for _, step in after]
        return steps
