"""Faults inside phases, on real servers, with the invariant checked all along.

Each test breaks something in the middle of a rotation: the writer restarts,
the database freezes (SIGSTOP), the store refuses a write (the rotator killed
at random moments: tests/test_kill_matrix.py). An independent checker thread
verifies the whole time that the color the pointer names has URLs that connect,
and Lambda-like and pooled clients run alongside. A refused login is always a
failure; a login that cannot reach the server is tolerated only on the server a
test took down, while it was down (:class:`~faults.Outages`): the store faults
tolerate none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apps import App, MyApp, make_app, make_my_app
from botocore.awsrequest import AWSResponse
from clusters import Cluster, Mariadb, start_cluster
from faults import Clients, Frozen, Invariant, Outages, postmaster_pid, wait_for
from helpers import assert_pointer_connects, connects, login_error
from servers import PrivateMariadb
from test_store_ssm import _Raw

from credflip import commands
from credflip.aws_lambda import handler
from credflip.errors import CredflipError, DrainTimeout, StoreError
from credflip.layout import Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    rotate,
)
from credflip.state import Phase, load_state, read_lock
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore

TTL = 0.3
ROTATE = ["--yes", "--client-ttl", "300ms", "--quiet", "300ms", "--store"]


@dataclass
class Server:
    """A private server of either engine that a test may restart or freeze."""

    engine: str
    new_app: Callable[[], App | MyApp]
    halt: Callable[[], None]
    resume: Callable[[], Any]
    pid: Callable[[], int]


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    cl: Cluster = start_cluster(15)
    try:
        yield Server(
            "postgresql",
            lambda: make_app(cl),
            cl.pg.halt,
            cl.pg.resume,
            lambda: postmaster_pid(cl.pg.data_dir),
        )
    finally:
        cl.pg.stop()


@pytest.fixture(scope="module")
def my_server() -> Iterator[Server]:
    server = PrivateMariadb("--userstat=ON").start()
    try:
        db = Mariadb(server.add_admin(), Path("/nonexistent"), server.port)

        def pid() -> int:
            assert server.server is not None
            return server.server.pid

        yield Server("mysql", lambda: make_my_app(db), server.halt, server.resume, pid)
    finally:
        server.stop()


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Server:
    name = "pg_server" if request.param == "postgresql" else "my_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def initialised(app: App | MyApp, store: Store, name: str) -> Layout:
    layout = Layout(name)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    return layout


# -- the writer restarts inside a phase ----------------------------------------


@pytest.mark.parametrize("phase", [Phase.PREPARE, Phase.VERIFY, Phase.DRAIN, Phase.RETIRE])
def test_a_writer_restart_inside_a_phase_is_ridden_out(
    server: Server, phase: Phase, tmp_path: Path
) -> None:
    """The server goes down when the phase starts (the drain: after a few samples) and
    comes back a second later: the phase retries, the rotation finishes."""
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "restart")
    notices: list[str] = []
    samples = 0
    restarts: list[threading.Thread] = []
    outages = Outages()

    def back_up() -> None:
        server.resume()
        outages.end(app.url.port)

    def on_event(event: Event) -> None:
        nonlocal samples
        if isinstance(event, Notice):
            notices.append(event.message)
        if isinstance(event, DrainProgress):
            samples += 1
        hit = (
            samples == 3
            if phase is Phase.DRAIN
            else isinstance(event, PhaseStarted) and event.phase is phase
        )
        if hit and not restarts:
            outages.begin(app.url.port)
            server.halt()
            restarts.append(threading.Timer(1.0, back_up))
            restarts[0].start()

    with (
        Invariant(store, layout, outages) as invariant,
        Clients(store, layout, outages=outages) as clients,
    ):
        clients.serve_more()
        result = rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=30),
            on_event=on_event,
        )
        restarts[0].join()
        clients.serve_more(what="clients serving after the restart")
    assert result.finished
    if phase is not Phase.DRAIN:
        assert any("trying the phase again" in n for n in notices), notices
    invariant.assert_held()
    clients.assert_fine()
    assert app.locked_marker in login_error(app.url)  # blue retired, as after any rotation
    assert read_lock(store, layout) is None


# -- the database freezes ------------------------------------------------------


def test_a_frozen_database_makes_rotate_give_up_within_its_timeouts(
    server: Server, tmp_path: Path
) -> None:
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "frozen")
    # The first connections are retried like a phase, within --reconnect-timeout.
    args = ["rotate", "--env", layout.env, "--reconnect-timeout", "3s", *ROTATE, store.url]
    with Frozen(server.pid()):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "credflip", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "CREDFLIP_ADMIN_URL": app.admin_url.secret,
                "CREDFLIP_DB_TIMEOUT": "2s",
            },
            check=False,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("credflip: error: "), proc.stderr
    assert "timeout" in last or "timed out" in last or "did not answer" in last, last
    # The promise: it gives up within its timeouts (3 s, and 2 s per statement); the
    # bound is generous for a busy machine and still half the default 60-s
    # --reconnect-timeout it would wait without honouring the option.
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert load_state(store, layout).current is None  # nothing changed
    assert read_lock(store, layout) is None
    result = rotate(
        store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=TTL, quiet=TTL)
    )
    assert result.finished


def test_a_database_frozen_during_the_drain_is_waited_out(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samples against the frozen server give up after the statement timeout and count
    as "in use"; once it thaws the drain finishes."""
    monkeypatch.setenv("CREDFLIP_DB_TIMEOUT", "1s")
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "frozen-drain")
    frozen = Frozen(server.pid())
    errors: list[str] = []
    samples = 0
    outages = Outages()

    def back_up() -> None:
        frozen.thaw()
        outages.end(app.url.port)

    thaw = threading.Timer(4.0, back_up)

    def on_event(event: Event) -> None:
        nonlocal samples
        if isinstance(event, DrainProgress):
            samples += 1
            errors.extend(r.error for r in event.readings if r.error)
            if samples == 2:
                outages.begin(app.url.port)
                frozen.freeze()
                thaw.start()

    try:
        with (
            Invariant(store, layout, outages) as invariant,
            Clients(store, layout, outages=outages) as clients,
        ):
            clients.serve_more()
            result = rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=60),
                on_event=on_event,
            )
            clients.serve_more(what="clients serving after the thaw")
    finally:
        thaw.cancel()
        back_up()
    assert result.finished
    clients.assert_fine()
    assert errors, "no sample saw the frozen server"
    assert any("did not answer" in e or "timed out" in e for e in errors), errors[:3]
    invariant.assert_held()
    assert app.locked_marker in login_error(app.url)


class LambdaContext:
    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


def test_the_lambda_handler_stops_before_its_deadline_on_a_frozen_database(
    pg_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = pg_server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "frozen-lambda")
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    event = {
        "env": layout.env,
        "store": store.url,
        "client_ttl": "3s",
        "quiet": "3s",
        "margin": "6s",
    }
    outcome: list[Any] = []
    budget = 14.0

    def invoke() -> None:
        try:
            outcome.append(handler(event, LambdaContext(budget)))
        except CredflipError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=invoke)
    started = time.monotonic()
    thread.start()
    current = None
    with Frozen(pg_server.pid()) as frozen:
        frozen.thaw()

        def draining() -> bool:
            nonlocal current
            current = load_state(store, layout).current
            return current is not None and current.phase is Phase.DRAIN

        wait_for(draining, timeout=10, what="the drain")
        frozen.freeze()
        thread.join(budget + 10)
        elapsed = time.monotonic() - started
    assert not thread.is_alive()
    # The promise itself: the handler answers before its invocation ends (it aims at
    # the margin, 6 s, before that: the slack for a busy machine).
    assert elapsed < budget, f"the handler ran {elapsed:.1f}s of a {budget:g}s invocation"
    assert isinstance(outcome[0], dict) and outcome[0]["status"] == "paused", outcome
    assert outcome[0]["stopped_in"] == "drain"
    assert read_lock(store, layout) is None
    done = handler(event, LambdaContext(60))
    assert done["status"] == "done", done


# -- the store fails on a write -------------------------------------------------


class WriteFaults:
    """Counts the store's writes (PutParameter, DeleteParameter; botocore's retries of one
    call are the same write) and fails write number *target*: every attempt, or once."""

    def __init__(self, store: SsmStore, *, target: int = 0, persistent: bool = True) -> None:
        self.target = target
        self.persistent = persistent
        self.writes = 0
        self.failed = 0
        self.kinds: list[str] = []
        self._last: bytes | None = None
        store.client.meta.events.register_first("before-send.ssm", self)

    def __call__(self, request: Any, **_kwargs: Any) -> AWSResponse | None:
        target = request.headers["X-Amz-Target"].decode()
        if not target.endswith(("PutParameter", "DeleteParameter")):
            return None
        body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        if body != self._last:
            self._last = body
            self.writes += 1
            self.kinds.append(f"{target.rsplit('.', 1)[1]} {json.loads(body)['Name']}")
        if self.writes != self.target or (self.failed and not self.persistent):
            return None
        self.failed += 1
        code, status = (
            ("ThrottlingException", 400) if self.target % 2 else ("InternalServerError", 500)
        )
        payload = json.dumps({"__type": code, "message": "injected"}).encode()
        return AWSResponse(
            request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(payload)
        )


#: The writes are split into this many tests, so that workers share them (botocore's
#: retries make each write's case take seconds).
WRITE_PARTS = 3


@pytest.mark.parametrize("part", range(WRITE_PARTS))
def test_each_store_write_of_a_rotation_failing_leaves_it_safe_and_resumable(
    pg_server: Server, moto_endpoint: str, part: int
) -> None:
    """SSM throttles (odd writes) or answers 500 (even writes) on every attempt of one
    write of a rotation, for each write in turn (every third one here, *part* first):
    the rotation stops with a clear error (or, for the lock's release, warns), the
    pointer's URLs connect, and the next run finishes."""
    app = pg_server.new_app()
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    layout = initialised(app, store, f"ssm-faults-{app.user}")
    options = RotateOptions(client_ttl=TTL, quiet=0.1, drain_timeout=30)
    counter = WriteFaults(store)
    rotate(store, layout, admin_url=app.admin_url, options=options)
    writes, kinds = counter.writes, counter.kinds
    assert writes >= 8, kinds
    outcomes: list[str] = []
    with Invariant(store, layout) as invariant, Clients(store, layout) as clients:
        for target in range(1 + part, writes + 1, WRITE_PARTS):
            fresh = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
            faults = WriteFaults(fresh, target=target)
            notices: list[str] = []

            def on_event(event: Event, into: list[str] = notices) -> None:
                if isinstance(event, Notice):
                    into.append(event.message)

            try:
                rotate(fresh, layout, admin_url=app.admin_url, options=options, on_event=on_event)
                outcomes.append("finished")
            except StoreError as exc:
                message = str(exc)
                assert "injected" in message or "throttled" in message, message
                notices.append(message)
                outcomes.append("stopped")
            assert faults.failed >= 3, (target, faults.kinds)  # botocore retried
            assert_pointer_connects(store, layout)
            if read_lock(store, layout) is not None:
                # Only the lock's own release failed; the run said what to do.
                assert any("unlock --env" in n for n in notices), notices
                commands.unlock(store, layout, force=True)
            result = rotate(store, layout, admin_url=app.admin_url, options=options)
            assert result.finished, target
            assert_pointer_connects(store, layout)
    assert "stopped" in outcomes, outcomes
    invariant.assert_held()
    clients.assert_fine()


def test_a_store_write_that_fails_once_is_retried_by_botocore(
    pg_server: Server, moto_endpoint: str
) -> None:
    app = pg_server.new_app()
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    layout = initialised(app, store, f"ssm-blip-{app.user}")
    for target in (1, 4, 7):
        faults = WriteFaults(store, target=target, persistent=False)
        result = rotate(
            store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
        )
        assert result.finished and faults.failed == 1
        store.client.meta.events.unregister("before-send.ssm", faults)


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("phase", [Phase.PREPARE, Phase.SWITCH, Phase.RETIRE])
def test_a_sqlite_store_locked_by_another_process_stops_the_rotation_safely(
    pg_server: Server, tmp_path: Path, phase: Phase
) -> None:
    """Another process holds a write transaction past the busy timeout from the start of
    *phase*: the phase's first write fails with a clear line, and the next run finishes."""
    app = pg_server.new_app()
    path = tmp_path / "params.db"
    layout = initialised(app, SqliteStore(path), "busy")
    store = SqliteStore(path, timeout=0.5)
    holders: list[subprocess.Popen[str]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is phase and not holders:
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(holder)
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"

    try:
        with Invariant(store, layout) as invariant, Clients(store, layout) as clients:
            clients.serve_more()
            with pytest.raises(StoreError) as caught:
                rotate(
                    store,
                    layout,
                    admin_url=app.admin_url,
                    options=RotateOptions(client_ttl=TTL, quiet=TTL),
                    on_event=on_event,
                )
            assert "another process kept a write transaction open" in str(caught.value)
            assert_pointer_connects(store, layout)
    finally:
        for holder in holders:
            holder.communicate("", timeout=10)
    invariant.assert_held()
    clients.assert_fine()
    if read_lock(store, layout) is not None:
        commands.unlock(store, layout, force=True)  # its release met the same lock
    result = rotate(
        store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=TTL, quiet=TTL)
    )
    assert result.finished


def test_a_restart_between_two_runs_of_a_drain_starts_its_quiet_window_over(
    server: Server, tmp_path: Path
) -> None:
    """The drain's evidence survives between runs only while the server does: a
    restart loses what its counters saw (MariaDB's userstat starts from zero;
    PostgreSQL keeps pg_stat_statements over a clean restart, but a login during the
    restart would not be in it), so the next run starts the window over. A restart
    is not use, though: past the timeout it raises no alarm (patching, a reboot), the
    run pauses, and the next one continues the window it began."""
    app = server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "restart-between-runs")

    def options(run_for: float) -> RotateOptions:
        return RotateOptions(
            client_ttl=0.2, quiet=10.0, drain_timeout=2.0, deadline=time.monotonic() + run_for
        )

    first = rotate(store, layout, admin_url=app.admin_url, options=options(6.0))
    assert not first.finished and first.stopped_in is Phase.DRAIN
    server.halt()
    server.resume()
    events: list[Event] = []
    second = rotate(
        store, layout, admin_url=app.admin_url, options=options(3.0), on_event=events.append
    )
    assert not second.finished and second.stopped_in is Phase.DRAIN  # paused: no alarm
    progress = [e.status for e in events if isinstance(e, DrainProgress)]
    assert "restarted since the last sample" in progress[0].reasons[0]
    assert not progress[0].used_late and progress[-1].quiet > 1.0
    assert connects(app.url)  # blue kept
    done = rotate(store, layout, admin_url=app.admin_url, options=options(15.0))
    assert done.finished
    assert app.locked_marker in login_error(app.url)


def test_a_window_that_starts_over_at_every_run_raises_drain_timeout(
    pg_server: Server, tmp_path: Path
) -> None:
    """The server restarts before every run, and the quiet window (8 s) is longer than
    a run (6 s): no run can finish, though nobody uses the old user. Past the
    timeout, once quiet for two windows, a run reports it (naming the restart) rather
    than pause forever; the old user keeps its login. (Runs of 6 s: two start times
    less than 5 s apart are taken for the same one.)"""
    app = pg_server.new_app()
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store, "restart-every-run")

    def options(run_for: float) -> RotateOptions:
        return RotateOptions(
            client_ttl=0.2, quiet=8.0, drain_timeout=1.0, deadline=time.monotonic() + run_for
        )

    first = rotate(store, layout, admin_url=app.admin_url, options=options(6.0))
    assert not first.finished and first.stopped_in is Phase.DRAIN
    outcomes: list[str] = []
    for _ in range(6):
        pg_server.halt()
        pg_server.resume()
        try:
            result = rotate(store, layout, admin_url=app.admin_url, options=options(6.0))
        except DrainTimeout as exc:
            outcomes.append(str(exc))
            break
        outcomes.append("done" if result.finished else "paused")
    assert outcomes[:-1] == ["paused"] * (len(outcomes) - 1), outcomes
    assert "restarted since the last sample" in outcomes[-1], outcomes
    assert "cannot carry over" in outcomes[-1] and "shows no use" in outcomes[-1]
    assert connects(app.url)  # blue kept
