"""What MySQL and MariaDB show of a user's use: its threads (and ending them), the
cumulative login counts the drain watches, and Aurora MySQL's members."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from ...errors import ConfigurationError, EngineError
from ..base import Observation, PooledBackend, Sessions, Signal
from ..connector import CONNECTIONS
from . import replication
from . import signals as my_signals
from .catalog import MysqlCatalog

__all__ = ["MysqlObserver"]


@dataclasses.dataclass
class MysqlObserver(MysqlCatalog):
    """Threads of a user, the drain's signals, and the cluster's members."""

    _connect_attrs: bool | None = dataclasses.field(default=None, repr=False)

    # -- sessions ----------------------------------------------------------

    def sessions(self, user: str, *, pooled: Collection[PooledBackend] = ()) -> Sessions:
        """Threads of *user* in the processlist, by client host, program and database."""
        _no_pooler(pooled)
        rows = self._run(
            my_signals.sessions_sql(program=self._has_connect_attrs()),
            [user],
            hint=f"it needs PROCESS to see other users' sessions: GRANT PROCESS ON *.* TO "
            f"{self.admin_url.user}",
        )
        # By user, the program of each thread listed with one; thread ids start over
        # with the server, so only while this connection lives.
        programs: dict[str, dict[int, str]] = self.per_connection("programs", dict)
        groups, programs[user] = my_signals.group_threads(rows, programs.get(user, {}))
        return Sessions(tuple(groups))

    def _has_connect_attrs(self) -> bool:
        """Whether the admin reads the clients' program names (performance_schema)."""
        if self._connect_attrs is None:
            self._connect_attrs = my_signals.has_connect_attrs(self._run)
        return self._connect_attrs

    # -- the drain ---------------------------------------------------------

    def signals(self) -> list[Signal]:
        """The processlist, and the cumulative login counts this server keeps.

        Found once per admin connection: a restart ends the connection, and may
        lose what ``SET GLOBAL`` turned on (MariaDB's userstat).
        """
        return list(
            self.per_connection(
                "signals",
                lambda: my_signals.find_signals(
                    self._run,
                    admin=self.admin_url.user,
                    privileges=self._global_privileges(),
                    mariadb=self.is_mariadb,
                ),
            )
        )

    def server_time(self) -> float:
        """``UNIX_TIMESTAMP(SYSDATE(6))``: now on the server's clock."""
        return float(self._run("SELECT UNIX_TIMESTAMP(SYSDATE(6))")[0][0])

    def enable_signals(self) -> list[str]:
        """MariaDB: ``SET GLOBAL userstat = ON`` when it is off and the admin may set it."""
        if not self.is_mariadb or self._run("SELECT @@userstat")[0][0]:
            return []
        privileges = self._global_privileges()
        if not any(p in privileges for p in my_signals.SET_GLOBAL_PRIVILEGES):
            return []  # signals() says how to turn it on
        try:
            self._run(my_signals.ENABLE_USERSTAT)
        except EngineError:
            return []
        self._memo.pop("signals", None)
        return [my_signals.USERSTAT_ENABLED]

    def observe(self, user: str, *, pooled: Collection[PooledBackend] | None = None) -> Observation:
        """Threads of *user*, and its login counts where the server keeps them (read
        before the threads: :class:`~credflip.engines.Observation`)."""
        _no_pooler(pooled or ())
        self._has_connect_attrs()  # found once, not between the counters and the threads
        cumulative = [s for s in self.signals() if s.cumulative]
        available = {s.name for s in cumulative if s.available}
        statements = {s.name for s in cumulative if s.available and s.statements}
        counters, silent = my_signals.counters(self._run, user, available, statements)
        sessions = self.sessions(user)
        return Observation(
            sessions,
            counters,
            started=self.per_connection("started", lambda: my_signals.server_started(self._run)),
            silent={**{s.name: s.detail for s in cumulative if not s.available}, **silent},
            connection=self.per_connection("number", lambda: next(CONNECTIONS)),
        )

    def aurora_instance(self) -> str | None:
        """Aurora MySQL: ``@@aurora_server_id``."""
        rows = self._run("SHOW VARIABLES LIKE 'aurora_server_id'")
        return str(rows[0][1]) if rows else None

    def cluster_members(self) -> list[str] | None:
        """Aurora MySQL: instance identifiers from ``information_schema.replica_host_status``."""
        exists = self._run(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'information_schema' "
            "AND TABLE_NAME = 'REPLICA_HOST_STATUS'"
        )
        if not exists:
            return None
        rows = self._run(
            "SELECT SERVER_ID FROM information_schema.replica_host_status "
            "WHERE SESSION_ID = 'MASTER_SESSION_ID' "
            "OR time_to_sec(timediff(now(), LAST_UPDATE_TIMESTAMP)) <= 300 ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def known_replicas(self) -> list[tuple[str, int | None]]:
        """Replicas reading this server's binary log (dump threads, registrations)."""
        return replication.known_replicas(
            self._run, host=self.admin_url.host, mariadb=self.is_mariadb
        )

    def terminate(self, user: str, *, only: Collection[PooledBackend] | None = None) -> int:
        """``KILL CONNECTION`` every thread of *user*."""
        _no_pooler(only or ())
        ids = self._run(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND ID <> CONNECTION_ID()",
            [user],
        )
        ended = 0
        for (thread,) in ids:
            try:
                self._run(
                    "KILL CONNECTION %s",
                    [int(thread)],
                    hint=f"it needs CONNECTION ADMIN (or SUPER): GRANT CONNECTION ADMIN ON *.* TO "
                    f"{self.admin_url.user}",
                )
                ended += 1
            except EngineError as exc:
                if "Unknown thread id" not in str(exc):
                    raise
        return ended


def _no_pooler(pooled: Collection[PooledBackend]) -> None:
    """PgBouncer pools PostgreSQL: no MySQL session is ever a pooler's."""
    if pooled:
        raise ConfigurationError("a PgBouncer pooler serves PostgreSQL only, not MySQL")
