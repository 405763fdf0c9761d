"""Scheduling an env: rotation windows and halting after failed rotations, through the
rotation Lambda (moto's SSM) and the command line (SQLite), on a real PostgreSQL.

Real failures: a ``--probe`` that fails with the new URLs stops every run in verify.
A halted run and one outside its window must not reach the database: the admin URL then
points at a :class:`~helpers.Listener`, which counts connection attempts.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from apps import App
from helpers import (
    FAST,
    LambdaContext,
    Listener,
    command,
    dump,
    emitted,
    env_params,
    rotate_args,
    window_from_now,
)

from credflip import commands
from credflip.aws_lambda import handler
from credflip.errors import CredflipError, UsageError
from credflip.halt import unhalt
from credflip.layout import Color, Layout
from credflip.lock import LockInfo
from credflip.rotation import read_pointer
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore

#: A probe no run gets through: every rotation fails in verify.
FAILING_PROBE = "SELECT * FROM nowhere"


@pytest.fixture
def ssm(lambda_event: dict[str, Any], moto_endpoint: str) -> Iterator[SsmStore]:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield store
    store.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    port = Listener()
    yield port
    port.close()


# -- the rotation Lambda ---------------------------------------------------------------


def test_failed_rotations_halt_the_env_once_and_unhalt_lifts_it(
    app: App,
    lambda_event: dict[str, Any],
    ssm: SsmStore,
    layout: Layout,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = {**lambda_event, "probe": FAILING_PROBE, "halt_after": 2}
    began = time.time()
    capsys.readouterr()
    for _ in range(2):
        with pytest.raises(CredflipError, match="nowhere"):
            handler(failing, LambdaContext(30))
    metrics, lines = emitted(capsys.readouterr().out)
    # The alarm's metric: on the invocation that halts, only.
    assert [(m["RotationsFailed"], m["Halts"]) for m in metrics] == [([1.0], [0.0]), ([1.0], [1.0])]
    (halted,) = [line for line in lines if line["event"] == "halted"]
    assert halted["failures"] == 2 and "nowhere" in halted["reason"]
    report = commands.status(ssm, layout)
    assert report.halt is not None and report.halt.failures == 2
    assert began <= report.halt.since <= time.time() and "nowhere" in report.halt.reason
    assert report.to_dict()["halted"]["since"] == pytest.approx(report.halt.since)

    # From now on every invocation answers "halted": no database, no metric, no change.
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", listener.url(app.admin_url).secret)
    before = env_params(ssm, layout)
    for mode in ("rotate", "resume"):
        answer = handler({**failing, "mode": mode}, LambdaContext(30))
        assert answer["status"] == "halted" and answer["failures"] == 2, answer
        assert f"credflip unhalt --env {layout.env}" in answer["reason"]
    assert listener.attempts() == 0
    assert emitted(capsys.readouterr().out)[0] == []
    assert env_params(ssm, layout) == before and load_state(ssm, layout).failures == 2

    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    lifted = unhalt(ssm, layout)
    assert lifted.halt is not None and lifted.failures == 2
    assert ssm.get(layout.halted) is None and load_state(ssm, layout).failures == 0
    done = handler(lambda_event, LambdaContext(30))  # the cause is gone: no failing probe
    assert done["status"] == "done" and done["to"] == "green", done


def test_a_drain_timeout_and_a_held_lock_are_no_failures(
    app: App, lambda_event: dict[str, Any], ssm: SsmStore, layout: Layout
) -> None:
    event = {**lambda_event, "halt_after": 2}
    with pytest.raises(CredflipError, match="nowhere"):
        handler({**event, "probe": FAILING_PROBE}, LambdaContext(30))
    assert load_state(ssm, layout).failures == 1
    holder = app.connect(app.url)  # a client of blue outlasts the drain timeout
    statuses: list[str] = []
    try:
        # Paused (at the invocation's end) until the drain is past its timeout.
        while "drain_timeout" not in statuses and len(statuses) < 10:
            statuses.append(handler({**event, "drain_timeout": "1s"}, LambdaContext(4.0))["status"])
    finally:
        holder.close()
    assert statuses[-1] == "drain_timeout" and set(statuses) <= {"paused", "drain_timeout"}
    # The rotation got through verify to the drain: the count starts over, no halt.
    assert load_state(ssm, layout).failures == 0 and ssm.get(layout.halted) is None
    live = LockInfo("ops", "10.0.0.9", 8, time.time(), token="x", expires_at=time.time() + 600)
    ssm.put(layout.lock, live.to_json(), overwrite=False)
    for _ in range(3):
        assert handler(event, LambdaContext(10))["status"] == "locked"
    ssm.delete(layout.lock)
    assert ssm.get(layout.halted) is None
    assert handler(event, LambdaContext(30))["status"] == "done"


def test_a_window_holds_back_a_new_rotation_never_one_under_way(
    app: App,
    lambda_event: dict[str, Any],
    ssm: SsmStore,
    layout: Layout,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed, opened = window_from_now(3, 4), window_from_now(-1, 2)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", listener.url(app.admin_url).secret)
    idle = handler({**lambda_event, "window": closed}, LambdaContext(10))
    assert idle["status"] == "idle" and "outside its rotation window" in idle["reason"], idle
    opens = calendar.timegm(time.strptime(idle["next_window"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(opens - (time.time() + 3 * 3600)) < 120
    assert listener.attempts() == 0
    assert ssm.get(layout.window) == closed  # for status

    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    holder = app.connect(app.url)  # keeps the drain going past the first invocation
    try:
        first = handler({**lambda_event, "window": opened}, LambdaContext(2.5))
        assert first["status"] == "paused", first  # in whichever phase: under way
    finally:
        holder.close()
    assert ssm.get(layout.window) == opened
    # Outside the window the rotation under way goes on to its end; no new one starts.
    done = handler({**lambda_event, "window": closed}, LambdaContext(30))
    assert done["status"] == "done" and done["resumed"], done
    assert handler({**lambda_event, "window": closed}, LambdaContext(30))["status"] == "idle"
    # An empty window (a template parameter left blank) is none, and forgets the record.
    assert handler({**lambda_event, "window": ""}, LambdaContext(30))["status"] == "done"
    assert ssm.get(layout.window) is None
    before = env_params(ssm, layout)
    with pytest.raises(UsageError, match=r"invalid rotation window 'Mon-Fri 9-16'"):
        handler({**lambda_event, "window": "Mon-Fri 9-16"}, LambdaContext(10))
    with pytest.raises(UsageError, match="invalid halt_after -1"):
        handler({**lambda_event, "halt_after": -1}, LambdaContext(10))
    assert env_params(ssm, layout) == before


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def ready(app: App, sqlite_store: SqliteStore, layout: Layout, cli: Any) -> list[str]:
    """The env initialised; the options that name it."""
    result = cli(*command("init", app, sqlite_store, layout, "--writer-url", app.url.secret))
    assert result.code == 0, result.err
    return ["--env", layout.env, "--store", sqlite_store.url]


def test_the_cli_halts_refuses_and_unhalt_lifts(
    app: App,
    sqlite_store: SqliteStore,
    layout: Layout,
    cli: Any,
    ready: list[str],
    listener: Listener,
) -> None:
    failing = rotate_args(app, sqlite_store, layout, *FAST, "--probe", FAILING_PROBE)
    first = cli(*failing, "--halt-after", "2")
    assert first.code == 1 and "warning" not in first.err, first.err  # its error, one line
    assert "failing: 1 failed rotation in a row" in cli("status", *ready).out
    second = cli(*failing, "--halt-after", "2")
    assert second.code == 1, second.err
    assert "is now halted after 2 failed rotations in a row" in second.err
    assert second.err.rstrip().splitlines()[-1].startswith("credflip: error: ")

    # Refused in one line, before anything connects or changes.
    before = dump(sqlite_store)
    admin = listener.url(app.admin_url).secret
    refused = cli("rotate", *ready, "--admin-url", admin, "--yes")
    assert refused.code == 6 and refused.out == "", refused
    (line,) = refused.err.splitlines()
    assert line.startswith(f"credflip: error: env {layout.env!r} is halted since ")
    assert "nowhere" in line and f"'credflip unhalt --env {layout.env}'" in line
    assert listener.attempts() == 0 and dump(sqlite_store) == before

    status = cli("status", *ready)
    assert status.code == 0 and "HALTED since " in status.out and "nowhere" in status.out
    data = json.loads(cli("status", *ready, "--json").out)
    assert data["halted"]["failures"] == 2 and data["failures"] == 2
    # The dry run warns, then answers as it would (here: a rotation is under way).
    plan = cli(*rotate_args(app, sqlite_store, layout, "--dry-run"))
    warning, answer = plan.err.splitlines()
    assert warning.startswith("credflip: warning: ") and warning.endswith("a real run refuses")
    assert plan.code == 1 and "--dry-run plans a new rotation only" in answer

    lifted = cli("unhalt", *ready)
    assert lifted.code == 0 and "halt lifted" in lifted.out, lifted
    assert "not halted" in cli("unhalt", *ready).out
    done = cli(*rotate_args(app, sqlite_store, layout, *FAST))
    assert done.code == 0, done.err
    assert read_pointer(sqlite_store, layout) is Color.GREEN
    assert load_state(sqlite_store, layout).failures == 0


def test_the_cli_window(
    app: App,
    sqlite_store: SqliteStore,
    layout: Layout,
    cli: Any,
    ready: list[str],
    listener: Listener,
) -> None:
    before = dump(sqlite_store)
    admin = listener.url(app.admin_url).secret
    for bad, says in (
        ("Mon-Fri 25:00-26:00 Asia/Seoul", "25:00 is not a time of day"),
        ("09:00-17:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ):
        refused = cli("rotate", *ready, "--admin-url", admin, "--yes", "--window", bad)
        (line,) = refused.err.splitlines()
        assert refused.code == 2 and line.startswith("credflip: error: invalid rotation window")
        assert says in line
    closed, opened = window_from_now(3, 4), window_from_now(-1, 2)
    idle = cli("rotate", *ready, "--admin-url", admin, "--yes", "--window", closed)
    assert idle.code == 0 and idle.err == "", idle
    (line,) = idle.out.splitlines()
    assert line.startswith(f"credflip: env {layout.env} is outside its rotation window ({closed})")
    assert "; the next opens " in line, line
    assert listener.attempts() == 0
    # The only change: the window recorded for status.
    assert dump(sqlite_store) == sorted([*before, (layout.window, closed)])
    assert f"rotation window: {closed} (closed; the next opens" in cli("status", *ready).out

    holder = app.connect(app.url)  # outlasts the drain: the run stops, resumable
    try:
        timed_out = cli(
            *rotate_args(app, sqlite_store, layout, *FAST, "--drain-timeout", "1s"),
            "--window",
            opened,
        )
    finally:
        holder.close()
    assert timed_out.code == 4, timed_out.err
    assert f"rotation window: {opened} (open now)" in cli("status", *ready).out
    # Outside its window, the rotation under way finishes; then nothing new starts.
    finished = cli(*rotate_args(app, sqlite_store, layout, *FAST, "--window", closed))
    assert finished.code == 0 and "(resumed)" in finished.err, finished.err
    assert read_pointer(sqlite_store, layout) is Color.GREEN
    again = cli(*rotate_args(app, sqlite_store, layout, *FAST, "--window", closed))
    assert again.code == 0 and "outside its rotation window" in again.out
    assert read_pointer(sqlite_store, layout) is Color.GREEN
    forget = cli(*rotate_args(app, sqlite_store, layout, *FAST, "--window", ""))
    assert forget.code == 0 and read_pointer(sqlite_store, layout) is Color.BLUE
    assert sqlite_store.get(layout.window) is None
