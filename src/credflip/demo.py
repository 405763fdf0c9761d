"""``credflip demo``: rotate a throw-away database under live traffic.

It starts a private PostgreSQL that enforces passwords, creates an app
database whose single user owns its tables, runs ``init``, then keeps worker
threads busy (each request: resolve, connect, insert, disconnect) while it
performs a few rotations with a short client TTL. It prints a table per
rotation and a line of totals, and deletes everything it made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from .commands import init
from .durations import format_duration
from .embedded import EmbeddedPostgres
from .engines import engine_class
from .errors import ConfigurationError
from .layout import Color, Layout
from .resolver import Resolver
from .rotation import RotateOptions, RotationResult, new_password, rotate
from .stores.sqlite import SqliteStore
from .urls import DbUrl
from .urls import libpq_kwargs as connect_kwargs

__all__ = ["DemoSummary", "Traffic", "resolve_and_insert", "run_demo"]


@dataclass
class DemoSummary:
    """Totals of a demo run."""

    rotations: int
    ok: int
    failed: int
    lost: int
    seconds: float
    results: list[RotationResult] = field(default_factory=list)


class Traffic:
    """Worker threads that each run ``request(worker)`` in a loop and count outcomes.

    ``request`` returns the color it used; any exception counts as a failed
    request. With *record*, every request's start, duration and outcome is
    kept for benchmarks.
    """

    def __init__(
        self,
        request: Callable[[int], str],
        *,
        workers: int,
        pause: float = 0.02,
        record: bool = False,
    ) -> None:
        self.request = request
        self.workers = workers
        self.pause = pause
        self.record = record
        self.ok = 0
        self.failed = 0
        self.by_color: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first_ok = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers and wait until one request succeeded."""
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._first_ok.wait(30):
            raise ConfigurationError(
                f"demo traffic could not complete a request: {self.errors.most_common(1)}"
            )

    def stop(self) -> None:
        """Stop and join the workers."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def snapshot(self) -> tuple[int, int]:
        """``(ok, failed)`` so far."""
        with self._lock:
            return self.ok, self.failed

    def _work(self, worker: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                color = self.request(worker)
            except Exception as exc:
                with self._lock:
                    self.failed += 1
                    self.errors[type(exc).__name__] += 1
                    if self.record:
                        self.samples.append((started, time.monotonic() - started, False))
            else:
                with self._lock:
                    self.ok += 1
                    self.by_color[color] += 1
                    if self.record:
                        self.samples.append((started, time.monotonic() - started, True))
                self._first_ok.set()
            self._stop.wait(self.pause)


def resolve_and_insert(resolver: Resolver, env: str) -> Callable[[int], str]:
    """A request as a Lambda makes it: resolve, connect, insert one row, disconnect.

    A fresh connection per request is the harshest client for a rotation:
    every request authenticates with whatever URL the resolver returns.
    """

    def request(worker: int) -> str:
        endpoints = resolver.resolve(env)
        url = DbUrl.parse(endpoints.writer_url)
        conn = engine_class(url.scheme).client_connect(url)
        try:
            cur = conn.cursor()
            cur.execute(
                "INSERT INTO orders (worker, color) VALUES (%s, %s)",
                (worker, endpoints.color.value),
            )
            conn.commit()
        finally:
            conn.close()
        return endpoints.color.value

    return request


class _Target(contextlib.AbstractContextManager["_Target"]):
    """A throw-away database for the demo: its admin and app URLs and a row count."""

    admin_url: DbUrl
    app_url: DbUrl
    description = ""

    def count_rows(self) -> int:
        """Rows in the orders table (read by an account that is not rotated)."""
        raise NotImplementedError

    def __exit__(self, *_exc: object) -> None:
        """Remove everything the target made."""


class _PostgresTarget(_Target):
    description = "a private PostgreSQL (scram-sha-256)"

    def __enter__(self) -> _PostgresTarget:
        # pg_stat_statements, preloaded as on RDS/Aurora, lets the drain count
        # logins; binaries without it still run the demo, sessions only.
        counted = {"shared_preload_libraries": "pg_stat_statements"}
        try:
            self.pg = pg = EmbeddedPostgres(log_statement="none", settings=counted).start()
        except ConfigurationError:
            counted = {}
            self.pg = pg = EmbeddedPostgres(log_statement="none").start()
        admin_pw, app_pw = new_password(), new_password()
        pg.create_role("credflip_admin", admin_pw, "CREATEROLE CREATEDB")
        pg.create_role("app", app_pw)
        with psycopg.connect(**connect_kwargs(pg.superuser_url), autocommit=True) as su:
            su.execute("GRANT pg_read_all_stats, pg_signal_backend TO credflip_admin")
            su.execute("CREATE DATABASE shop OWNER app")
            if su.info.server_version >= 160000:
                # 16+: CREATEROLE covers only roles the admin holds ADMIN OPTION on.
                su.execute("GRANT app TO credflip_admin WITH ADMIN TRUE, INHERIT FALSE, SET FALSE")
        if counted:
            url = pg.url("postgres", pg.superuser_password, "shop")
            with psycopg.connect(**connect_kwargs(url), autocommit=True) as su:
                su.execute("CREATE EXTENSION pg_stat_statements")
        self.app_url = pg.url("app", app_pw, "shop")
        with psycopg.connect(**connect_kwargs(self.app_url), autocommit=True) as app:
            app.execute(
                "CREATE TABLE orders (id bigserial PRIMARY KEY, worker int NOT NULL, "
                "color text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
            )
        self.admin_url = pg.url("credflip_admin", admin_pw, "shop")
        return self

    def count_rows(self) -> int:
        url = self.pg.url("postgres", self.pg.superuser_password, "shop")
        with psycopg.connect(**connect_kwargs(url)) as conn:
            row = conn.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0

    def __exit__(self, *_exc: object) -> None:
        self.pg.stop()


class _MysqlTarget(_Target):
    """A database and two users on a reachable MySQL/MariaDB, dropped afterwards."""

    def __init__(self, root_url: str) -> None:
        self.root = DbUrl.parse(root_url, what="CREDFLIP_DEMO_MYSQL_URL")
        self.description = f"the MySQL/MariaDB server at {self.root.host}:{self.root.port or 3306}"
        self.suffix = new_password()[:6].lower().replace("-", "x").replace("_", "x")

    def _root(self) -> Any:
        import pymysql

        from .urls import pymysql_kwargs as my_kwargs

        try:
            return pymysql.connect(**my_kwargs(self.root), autocommit=True, connect_timeout=5)
        except pymysql.err.MySQLError as exc:
            raise ConfigurationError(
                f"the MySQL demo needs a server it may administer at {self.root} ({exc}); set "
                f"CREDFLIP_DEMO_MYSQL_URL to a root URL"
            ) from exc

    def __enter__(self) -> _MysqlTarget:
        from .engines.mysql import native_password_hash

        self.db, self.user, self.admin = (
            f"credflip_demo_{self.suffix}",
            f"demo_app_{self.suffix}",
            f"demo_admin_{self.suffix}",
        )
        admin_pw, app_pw = new_password(), new_password()
        port = self.root.port or 3306
        with self._root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.db}`")
            cur.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
                (self.admin, native_password_hash(admin_pw)),
            )
            cur.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
                (self.user, native_password_hash(app_pw)),
            )
            cur.execute(
                f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{self.admin}'@'%'"
            )
            cur.execute(f"GRANT SELECT ON mysql.* TO '{self.admin}'@'%'")
            cur.execute(f"GRANT ALL ON `{self.db}`.* TO '{self.admin}'@'%' WITH GRANT OPTION")
            cur.execute(f"GRANT ALL ON `{self.db}`.* TO '{self.user}'@'%'")
            cur.execute(
                f"CREATE TABLE `{self.db}`.orders (id bigint AUTO_INCREMENT PRIMARY KEY, "
                "worker int NOT NULL, color varchar(16) NOT NULL, "
                "at timestamp DEFAULT CURRENT_TIMESTAMP)"
            )
        host = self.root.host
        self.admin_url = DbUrl("mysql", host, self.admin, admin_pw, port, self.db)
        self.app_url = DbUrl("mysql", host, self.user, app_pw, port, self.db)
        return self

    def count_rows(self) -> int:
        with self._root() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{self.db}`.orders")
            return int(cur.fetchone()[0])

    def __exit__(self, *_exc: object) -> None:
        with self._root() as conn, conn.cursor() as cur:
            for user in (self.admin, self.user, f"{self.user}_green"):
                cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
            cur.execute(f"DROP DATABASE IF EXISTS `{self.db}`")


def run_demo(
    *,
    engine: str = "postgresql",
    rotations: int = 3,
    workers: int = 4,
    client_ttl: float = 1.0,
    out: Console,
    err: Console,
) -> DemoSummary:
    """Run the demo and print its tables; return the totals."""
    begin = time.monotonic()
    target: _Target = (
        _PostgresTarget()
        if engine == "postgresql"
        else _MysqlTarget(os.environ.get("CREDFLIP_DEMO_MYSQL_URL", "mysql://root@127.0.0.1:3306/"))
    )
    workdir = Path(tempfile.mkdtemp(prefix="credflip-demo-"))
    err.print(f"setting up {target.description} ...")
    try:
        with target:
            return _run(target, workdir, rotations, workers, client_ttl, out, err, begin)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(
    target: _Target,
    workdir: Path,
    rotations: int,
    workers: int,
    client_ttl: float,
    out: Console,
    err: Console,
    begin: float,
) -> DemoSummary:
    admin_url, app_url = target.admin_url, target.app_url
    store = SqliteStore(workdir / "params.db")
    layout = Layout("demo")
    result0 = init(store, layout, admin_url=admin_url, writer_url=app_url)
    err.print(
        f"env demo initialised in {store.url}; user {result0.users[Color.BLUE]} is blue, "
        f"{result0.users[Color.GREEN]} is green"
    )
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=client_ttl)
    traffic = Traffic(resolve_and_insert(resolver, layout.env), workers=workers)
    traffic.start()
    err.print(f"{workers} workers sending requests (resolve, connect, insert) ...")
    results: list[RotationResult] = []
    options = RotateOptions(client_ttl=client_ttl, drain_timeout=60.0)
    try:
        for n in range(1, rotations + 1):
            ok0, failed0 = traffic.snapshot()
            result = rotate(store, layout, admin_url=admin_url, options=options)
            ok1, failed1 = traffic.snapshot()
            results.append(result)
            _print_rotation(out, n, result, ok1 - ok0, failed1 - failed0)
    finally:
        traffic.stop()
        store.close()
    rows = target.count_rows()
    summary = DemoSummary(
        rotations=rotations,
        ok=traffic.ok,
        failed=traffic.failed,
        lost=max(0, traffic.ok - rows),
        seconds=time.monotonic() - begin,
        results=results,
    )
    out.print(
        f"total: {summary.rotations} rotations in {format_duration(summary.seconds)}; "
        f"requests ok {summary.ok}, failed {summary.failed}; rows written {rows}, "
        f"lost {summary.lost}" + (f"; errors: {dict(traffic.errors)}" if traffic.errors else "")
    )
    return summary


def _print_rotation(out: Console, n: int, result: RotationResult, ok: int, failed: int) -> None:
    table = Table(
        title=f"rotation {n}: {result.from_color} ({result.from_user}) → {result.to_color} "
        f"({result.to_user})",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("phase")
    table.add_column("time", justify="right")
    for phase, seconds in result.timings.items():
        table.add_row(phase, format_duration(seconds))
    table.add_row("requests ok", str(ok))
    table.add_row("requests failed", str(failed))
    out.print(table)
