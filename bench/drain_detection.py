"""Does the drain see a legacy client? Sessions only vs sessions + a login counter.

A *legacy* client read its URL before the switch and keeps it (a Lambda that
resolved at cold start). It opens one short connection per request, a few
milliseconds long, far shorter than the drain's 200 ms sample interval. For
each engine, request rate and signal set, N rotations run while such a client
works; a trial is *correct* when the drain refused to retire the old user
(the rotation stopped with a drain timeout, resumable) and *missed* when it
retired the user under the client, whose next requests then failed.

Settings, the same for both signal sets: client TTL 1 s; ``--min-drain`` of
two client periods plus 1 s when the client is slower than one request per
TTL (what the README recommends), else 0; drain timeout 3 s after the
earliest moment the drain could finish.

Servers: a private PostgreSQL with pg_stat_statements preloaded (sessions only:
an app database where the extension was not created), and the machine's
MariaDB at 127.0.0.1:3306 (root without password) with ``userstat`` off, then
on. Trials of one cell run at the same time, each with its own app and env.

    python bench/drain_detection.py [--trials 5] [--engines postgresql,mysql]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from children import join_all
from psycopg import sql

from credflip import commands
from credflip.demo import Worker
from credflip.demo.cluster import EmbeddedPostgres
from credflip.engines import engine_class
from credflip.engines.mysql import native_password_hash
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.rotation import RotateOptions, new_password, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

TTL = 1.0
RATES = [50.0, 5.0, 1.0, 0.2]  # requests per second
_n = itertools.count(1)


@dataclass
class Cell:
    engine: str
    rate: float
    counters: bool
    correct: int = 0
    trials: int = 0
    failed_requests: int = 0


def settings_for(rate: float) -> tuple[float, float]:
    """``(min_drain, drain_timeout)`` for a client making *rate* requests per second."""
    period = 1.0 / rate
    min_drain = 2 * period + 1.0 if period > TTL else 0.0
    earliest = max(min_drain, TTL * 1.1 + TTL)
    return min_drain, earliest + 3.0


class Legacy:
    """One short connection per request, always with the same URL.

    A failed request is counted; a thread that dies of anything else fails the
    trial (:meth:`check`, and on leaving the ``with``).
    """

    def __init__(self, url: DbUrl, period: float) -> None:
        self.url, self.period = url, period
        self.ok = self.failed = 0
        self.stop = threading.Event()
        self.thread = Worker(self.loop, name=f"the legacy client of {url.user}")

    def loop(self) -> None:
        cls = engine_class(self.url.scheme)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn = cls.client_connect(self.url)
                try:
                    conn.cursor().execute("SELECT 1")
                finally:
                    conn.close()
                self.ok += 1
            except Exception:
                self.failed += 1
            self.stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def __enter__(self) -> Legacy:
        self.thread.start()
        return self

    def check(self) -> None:
        self.thread.check()

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.check()


# -- servers ------------------------------------------------------------------


class Postgres:
    name = "postgresql"
    counter = "pg_stat_statements"

    def __init__(self) -> None:
        self.pg = EmbeddedPostgres(
            log_statement="none", settings={"shared_preload_libraries": "pg_stat_statements"}
        ).start()
        self.admin_password = new_password()
        self.pg.create_role("credflip_admin", self.admin_password, "CREATEROLE CREATEDB")
        with self.su() as conn:
            conn.execute("GRANT pg_read_all_stats, pg_signal_backend TO credflip_admin")

    def su(self, database: str = "postgres") -> psycopg.Connection[Any]:
        url = self.pg.url("postgres", self.pg.superuser_password, database)
        return psycopg.connect(**connect_kwargs(url), autocommit=True)

    def app(self, counters: bool) -> tuple[DbUrl, DbUrl]:
        name = f"bench{next(_n)}"
        password = new_password()
        self.pg.create_role(name, password)
        with self.su() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(name)
                )
            )
        if counters:
            with self.su(name) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
        return self.pg.url("credflip_admin", self.admin_password, name), self.pg.url(
            name, password, name
        )

    @contextlib.contextmanager
    def signals(self, counters: bool) -> Iterator[None]:
        yield  # per app database: the extension is created or not

    def close(self) -> None:
        self.pg.stop()


class Mariadb:
    """The machine's MariaDB; every user and database it makes starts with *prefix*."""

    name = "mysql"
    counter = "user_statistics"

    def __init__(self, prefix: str = "cfb") -> None:
        self.prefix = prefix
        self.admin = f"{prefix}_admin"
        self.userstat = self.sql("SELECT @@userstat")[0][0]
        self.clean()  # what an interrupted earlier run left
        self.admin_password = new_password()
        self.sql(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
            args=(self.admin, native_password_hash(self.admin_password)),
        )
        self.sql(f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{self.admin}'@'%'")
        self.sql(f"GRANT SELECT ON mysql.* TO '{self.admin}'@'%'")

    def sql(self, statement: str, args: Any = None) -> list[Any]:
        with (
            pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(statement, args)
            return list(cur.fetchall()) if cur.description else []

    def app(self, counters: bool) -> tuple[DbUrl, DbUrl]:
        name = f"{self.prefix}_app{next(_n)}"
        password = new_password()
        self.sql(f"CREATE DATABASE `{name}`")
        self.sql(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
            args=(name, native_password_hash(password)),
        )
        self.sql(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{name}'@'%'")
        self.sql(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{self.admin}'@'%' WITH GRANT OPTION")
        admin = DbUrl("mysql", "127.0.0.1", self.admin, self.admin_password, 3306, name)
        return admin, DbUrl("mysql", "127.0.0.1", name, password, 3306, name)

    @contextlib.contextmanager
    def signals(self, counters: bool) -> Iterator[None]:
        self.sql("SET GLOBAL userstat = %s", args=(1 if counters else 0,))
        yield

    def close(self) -> None:
        self.sql("SET GLOBAL userstat = %s", args=(self.userstat,))
        self.clean()

    def clean(self) -> None:
        like = f"{self.prefix}\\_%"
        for user, host in self.sql("SELECT User, Host FROM mysql.user WHERE User LIKE %s", like):
            self.sql("DROP USER %s@%s", args=(user, host))
        for (db,) in self.sql(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", like
        ):
            self.sql(f"DROP DATABASE `{db}`")


# -- trials -------------------------------------------------------------------


def trial(server: Any, cell: Cell, lock: threading.Lock, tmp: Path) -> None:
    admin, url = server.app(cell.counters)
    store = SqliteStore(tmp / f"{url.user}.db")
    layout = Layout(url.user)
    commands.init(store, layout, admin_url=admin, writer_url=url)
    min_drain, timeout = settings_for(cell.rate)
    # Without a counter rotate refuses unless the risk is accepted: the
    # sessions-only cells measure exactly that risk.
    options = RotateOptions(
        client_ttl=TTL,
        min_drain=min_drain,
        drain_timeout=timeout,
        sessions_only=not cell.counters,
    )
    with Legacy(url, 1.0 / cell.rate) as legacy:
        try:
            rotate(
                store, layout, admin_url=admin, options=options, on_event=lambda _e: legacy.check()
            )
            refused = False
            # Let a retired user show what it cost: the client's next requests.
            threading.Event().wait(min(12.0, 2.5 / cell.rate))
        except DrainTimeout:
            refused = True
    store.close()
    with lock:
        cell.trials += 1
        cell.correct += refused
        cell.failed_requests += legacy.failed


def run_cell(server: Any, cell: Cell, trials: int, tmp: Path) -> None:
    """The cell's trials at the same time; the first that dies raises here, with its error."""
    lock = threading.Lock()
    with server.signals(cell.counters):
        threads = [
            Worker(
                functools.partial(trial, server, cell, lock, tmp),
                name=f"trial {n} of {cell.engine} {cell.rate:g}/s",
            )
            for n in range(1, trials + 1)
        ]
        for thread in threads:
            thread.start()
        join_all(threads)


def share(cell: Cell) -> str:
    return f"{cell.correct}/{cell.trials} ({100 * cell.correct / max(cell.trials, 1):.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--engines", default="postgresql,mysql")
    args = parser.parse_args()
    makers: dict[str, Callable[[], Any]] = {"postgresql": Postgres, "mysql": Mariadb}
    rows: list[tuple[Cell, Cell]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.engines.split(","):
            server = makers[name]()
            try:
                for rate in RATES:
                    pair = (Cell(name, rate, False), Cell(name, rate, True))
                    for cell in pair:
                        run_cell(server, cell, args.trials, Path(tmp))
                    rows.append(pair)
                    print(f"  {name} {rate:g}/s: {share(pair[0])} | {share(pair[1])}", flush=True)
            finally:
                server.close()
    print()
    print(
        f"drain refused to retire a user still in use ({args.trials} trials per cell; client "
        f"TTL {TTL:g}s; connections of a few ms; a sample every 200 ms)"
    )
    print(
        f"{'engine':<11} {'counter':<19} {'rate':>6} {'min-drain':>9}  {'sessions only':<14} "
        f"{'+ counter':<14} failed requests after a wrong retire"
    )
    for plain, counted in rows:
        min_drain, _ = settings_for(plain.rate)
        counter = Postgres.counter if plain.engine == "postgresql" else Mariadb.counter
        print(
            f"{plain.engine:<11} {counter:<19} {plain.rate:>4g}/s {min_drain:>8g}s  "
            f"{share(plain):<14} {share(counted):<14} {plain.failed_requests} / "
            f"{counted.failed_requests}"
        )


if __name__ == "__main__":
    main()
