"""No lock queue: credflip's statements never hold an application's requests behind an
idle transaction for longer than the lock timeout (issue 19).

The scene, on a real server: the application serves a request every 20 ms on
its own session while another of its sessions sits idle in a transaction that
holds a lock on the table the requests read. ``init`` (and retire, which moves
what the old user created to the group) must wait for that lock; while a
statement waits for it, every request queues behind it. Nothing here sleeps to
synchronise: the scene polls the server for a credflip statement waiting for a
lock, and the blocker ends its transaction once credflip has waited twice
(it retried), or after a fallback hold long enough for the test to fail on a
credflip that waits in the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from apps import ENGINES, AnyApp, App, MyApp, engine_app
from clusters import ADMIN
from servers import MY_ADMIN

from credflip import commands
from credflip.engines import Engine, engine_for
from credflip.engines.locks import LockWait
from credflip.errors import DeadlineReached, LockTimeout
from credflip.layout import Layout
from credflip.rotation.lease import read_lease
from credflip.stores.sqlite import SqliteStore

LOCK_TIMEOUT = 1.0
#: How much longer than the lock timeout a request may take (scheduling, 2 cores).
SLACK = 0.5
#: The blocker's longest hold after credflip first waits: a credflip that waits in
#: the queue holds the requests for this long, and the test fails.
HOLD = 4.0
INTERVAL = 0.02


def as_itself(app: AnyApp) -> tuple[str, ...]:
    """PostgreSQL sessions of a color start as the group after init: act as the user."""
    return ("SET ROLE NONE",) if isinstance(app, App) else ()


@dataclass
class Traffic:
    """The application: one request every 20 ms on its own session; latencies recorded."""

    app: AnyApp
    table: str = "orders"
    setup: tuple[str, ...] = ()
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        conn = self.app.open(self.app.url)
        cur = conn.cursor()
        for statement in self.setup:
            cur.execute(statement)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    cur.execute(f"SELECT count(*) FROM {self.table}")
                    cur.fetchall()
                except Exception as exc:  # a failed request is what we count
                    self.failures.append(str(exc))
                self.latencies.append(time.monotonic() - started)
                self._stop.wait(max(0.0, started + INTERVAL - time.monotonic()))
        finally:
            conn.close()

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)


@dataclass
class Hold:
    """A session that holds a lock until :meth:`end`."""

    session: int
    end: Callable[[], None]


@contextmanager
def holding(conn: Any, statements: tuple[str, ...], release: str) -> Iterator[Hold]:
    cur = conn.cursor()
    for statement in statements:
        cur.execute(statement)
    ended = threading.Event()

    def end() -> None:
        if not ended.is_set():
            ended.set()
            cur.execute(release)

    session = conn.info.backend_pid if isinstance(conn, psycopg.Connection) else conn.thread_id()
    try:
        yield Hold(session, end)
    finally:
        end()
        conn.close()


def idle_transaction(app: AnyApp, table: str = "orders") -> Any:
    """An application session idle in a transaction that read *table*."""
    named = ("SET application_name = 'report-job'",) if isinstance(app, App) else ()
    statements = (*named, *as_itself(app), "BEGIN", f"SELECT count(*) FROM {table}")
    return holding(app.open(app.url), statements, "ROLLBACK")


def waiting(app: AnyApp) -> set[tuple[Any, ...]]:
    """The admin's statements waiting for a lock now: (session, statement start) pairs."""
    if isinstance(app, App):
        with app.su() as conn:
            rows = conn.execute(
                "SELECT a.pid, a.query_start FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE NOT l.granted AND a.usename = %s",
                [ADMIN],
            ).fetchall()
    else:
        rows = app.mariadb.sql(
            "SELECT ID, QUERY_ID FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND STATE LIKE 'Waiting for%%lock%%'",
            args=(MY_ADMIN,),
        )
    return {tuple(r) for r in rows}


@dataclass
class Run:
    """A credflip call in a thread, the blocker's end decided by what the server shows."""

    error: BaseException | None = None
    waits: set[tuple[Any, ...]] = field(default_factory=set)
    seconds: float = 0.0


def run_blocked(app: AnyApp, call: Callable[[], object], end: Callable[[], None], *,
                release_after: int | None = 2) -> Run:  # fmt: skip
    """Run *call* while the blocker holds its lock; end the blocker once credflip waited
    *release_after* times (None: never while *call* runs), or HOLD after its first wait."""
    run = Run()

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # reported to the test
            run.error = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    first: float | None = None
    while thread.is_alive():
        run.waits |= waiting(app)
        if run.waits and first is None:
            first = time.monotonic()
        if first is not None and (
            (release_after is not None and len(run.waits) >= release_after)
            or time.monotonic() - first > HOLD
        ):
            end()
        thread.join(0.01)
    run.seconds = time.monotonic() - started
    end()
    return run


def report(what: str, run: Run, traffic: Traffic) -> float:
    """Print the numbers (pytest -s) and return the slowest request."""
    slowest = traffic.slowest
    print(
        f"\n{what}: {run.seconds:.2f}s, waited {len(run.waits)} time(s); slowest request "
        f"{slowest:.3f}s of {len(traffic.latencies)}, {len(traffic.failures)} failed"
    )
    return slowest


def init_call(app: AnyApp, store: SqliteStore, eng: Engine) -> Callable[[], object]:
    def init() -> object:
        return commands.init(store, Layout("env"), admin_url=app.admin_url, writer_url=app.url,
                             engine=eng)  # fmt: skip

    return init


@pytest.mark.parametrize("engine_name", ENGINES)
def test_init_behind_an_idle_transaction_queues_no_request(
    request: pytest.FixtureRequest, engine_name: str, tmp_path: Path
) -> None:
    app = engine_app(request, engine_name)
    store = SqliteStore(tmp_path / "params.db")
    with (
        engine_for(app.admin_url) as eng,
        Traffic(app) as traffic,
        idle_transaction(app) as hold,
    ):
        run = run_blocked(app, init_call(app, store, eng), hold.end)
    slowest = report(f"{engine_name} init", run, traffic)
    assert run.error is None, run.error
    assert traffic.failures == []
    assert slowest <= LOCK_TIMEOUT + SLACK
    assert store.get(Layout("env").state) is not None


def owner(app: App, table: str) -> str:
    with app.su() as conn:
        row = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", [table])
        return str(row.fetchone()[0])  # type: ignore[index]


def admin_acts_as(app: App) -> bool:
    with app.su() as conn:
        row = conn.execute("SELECT pg_has_role(%s, %s, 'USAGE')", [ADMIN, app.user]).fetchone()
        return bool(row and row[0])


def test_init_stops_naming_the_blocker_then_a_second_init_succeeds(
    app: App, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "params.db")
    lease = admin_acts_as(app)
    with engine_for(app.admin_url) as eng, Traffic(app) as traffic, idle_transaction(app) as hold:
        eng.lock_wait = LockWait(timeout=LOCK_TIMEOUT, budget=1.5)
        run = run_blocked(app, init_call(app, store, eng), hold.end, release_after=None)
    slowest = report(f"pg{app.cluster.version} init giving up", run, traffic)
    assert isinstance(run.error, LockTimeout), run.error
    line = str(run.error)
    assert "\n" not in line and app.password not in line and app.cluster.admin_password not in line
    assert f"pid {hold.session} of user {app.user!r}" in line
    assert "application 'report-job', idle in transaction, transaction open for" in line
    assert f"pg_terminate_backend({hold.session})" in line and "changed nothing more" in line
    assert traffic.failures == [] and slowest <= LOCK_TIMEOUT + SLACK
    # Nothing more changed: the statement that timed out was rolled back, the ones
    # after it never ran, the admin's lease was taken back, nothing was stored.
    assert owner(app, "orders") == app.user
    assert admin_acts_as(app) == lease
    assert store.get(Layout("env").state) is None
    assert read_lease(store, Layout("env")) is None  # every cleanup ran: no lease left
    # The blocker is gone: the same init again finishes what the first one began.
    result = init_call(app, store, engine_for(app.admin_url))()
    assert isinstance(result, commands.InitResult) and result.group == app.group
    assert owner(app, "orders") == app.group


def test_retire_moves_late_objects_without_queueing_requests(app: App, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "params.db")
    init_call(app, store, engine_for(app.admin_url))()
    # What the old user created during the drain (as itself), retire gives the group.
    app.execute(app.url, "SET ROLE NONE", "CREATE TABLE late_orders (id int)")
    assert owner(app, "late_orders") == app.user
    with (
        engine_for(app.admin_url) as eng,
        Traffic(app, "late_orders", as_itself(app)) as traffic,
        idle_transaction(app, "late_orders") as hold,
    ):

        def retire() -> None:
            eng.execute(eng.plan_retire(app.user, keep=app.green, group=app.group, drop=False))

        run = run_blocked(app, retire, hold.end)
    slowest = report(f"pg{app.cluster.version} retire", run, traffic)
    assert run.error is None, run.error
    assert len(run.waits) >= 2  # it did wait, and tried again
    assert traffic.failures == [] and slowest <= LOCK_TIMEOUT + SLACK
    assert owner(app, "late_orders") == app.group


def test_retire_waiting_at_the_deadline_stops_resumably_naming_the_blocker(
    app: App, tmp_path: Path
) -> None:
    """A Lambda's deadline that comes while a statement waits for a lock ends the plan as a
    resumable stop (DeadlineReached), not as a failure, and the admin's lease is settled."""
    store = SqliteStore(tmp_path / "params.db")
    init_call(app, store, engine_for(app.admin_url))()
    app.execute(app.url, "SET ROLE NONE", "CREATE TABLE late_orders (id int)")
    lease = admin_acts_as(app)
    with engine_for(app.admin_url) as eng, idle_transaction(app, "late_orders") as hold:
        eng.lock_wait = LockWait(timeout=LOCK_TIMEOUT, deadline=time.monotonic() + 2.5)
        with pytest.raises(DeadlineReached) as info:
            eng.execute(eng.plan_retire(app.user, keep=app.green, group=app.group, drop=False))
    line = str(info.value)
    assert line.startswith("stopped at the deadline after") and "\n" not in line
    assert f"pid {hold.session} of user {app.user!r}" in line
    assert owner(app, "late_orders") == app.user and admin_acts_as(app) == lease


@contextmanager
def backup_lock(app: MyApp) -> Iterator[Hold]:
    """A backup holding a read lock on the grant tables (mysqldump's LOCK TABLES)."""
    with holding(
        app.mariadb.root(), ("LOCK TABLES mysql.global_priv READ LOCAL",), "UNLOCK TABLES"
    ) as hold:
        yield hold


def test_mariadb_init_behind_a_backup_stops_naming_it(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    app = engine_app(request, "mysql")
    assert isinstance(app, MyApp)
    plugins = app.mariadb.sql(
        "SELECT 1 FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO'"
    )
    if not plugins:
        app.mariadb.sql("INSTALL SONAME 'metadata_lock_info'")
    store = SqliteStore(tmp_path / "params.db")
    with engine_for(app.admin_url, statement_timeout=2.0) as eng, backup_lock(app) as hold:
        eng.lock_wait = LockWait(timeout=LOCK_TIMEOUT, budget=0)  # one try: its own 1.8s
        run = run_blocked(app, init_call(app, store, eng), hold.end, release_after=None)
    print(f"\nmariadb init behind a backup: {run.seconds:.2f}s; {run.error}")
    assert isinstance(run.error, LockTimeout), run.error
    line = str(run.error)
    # performance_schema is off here: the program is unknown, the address is said.
    assert f"thread {hold.session} of user 'root' (application unknown, from 127.0.0.1:" in line
    assert f"KILL {hold.session}" in line
    assert not app.user_exists(app.green)  # the statement that waited never ran
    assert store.get(Layout("env").state) is None
    init_call(app, store, engine_for(app.admin_url))()
    assert app.user_exists(app.green)
