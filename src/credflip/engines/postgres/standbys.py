"""What PostgreSQL shows of its standbys and clusters: recovery, WAL positions, the
standbys streaming from it and Aurora's members, for the replicas' share of the drain."""

from __future__ import annotations

from . import replication
from . import signals as pg_signals
from .connection import PgConnection

__all__ = ["PgStandbys"]


class PgStandbys(PgConnection):
    """Whether this server is a standby, how far it replayed, and whom it streams to."""

    def is_standby(self) -> bool:
        """``pg_is_in_recovery()``."""
        return bool(self._run("SELECT pg_is_in_recovery()")[0][0])

    def position(self) -> str | None:
        """``pg_current_wal_insert_lsn()`` on a primary; None on a standby.

        The *insert* position: it includes the commit records of the admin's
        last statements even when ``synchronous_commit`` is off and they are
        not yet written (``pg_current_wal_lsn()`` can be behind them).
        """
        rows = self._run(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
            "ELSE pg_current_wal_insert_lsn()::text END"
        )
        return None if rows[0][0] is None else str(rows[0][0])

    def replay_gap(self, position: str) -> int | None:
        """Bytes until ``pg_last_wal_replay_lsn()`` reaches *position* (0 on the primary)."""
        return pg_signals.standby_gap(self._run, position)

    def cluster_members(self) -> list[str] | None:
        """Aurora PostgreSQL: instance identifiers from ``aurora_replica_status()``."""
        if not self._run("SELECT to_regproc('aurora_replica_status') IS NOT NULL")[0][0]:
            return None
        return [str(r[0]) for r in self._run(pg_signals.AURORA_MEMBERS_SQL)]

    def aurora_instance(self) -> str | None:
        """Aurora PostgreSQL: ``aurora_db_instance_identifier()``."""
        if not self._run("SELECT to_regproc('aurora_db_instance_identifier') IS NOT NULL")[0][0]:
            return None
        return str(self._run("SELECT aurora_db_instance_identifier()")[0][0])

    def known_replicas(self) -> list[tuple[str, int | None]]:
        """The standbys streaming from this server (``pg_stat_replication``); ports unknown."""
        return replication.known_replicas(
            self._run, host=self.admin_url.host, admin=self.admin_url.user
        )
