"""The rotation Lambda handler, on SSM (moto) and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from apps import App, make_app
from clusters import Cluster
from helpers import LambdaContext, dump, emitted, login_error, wait_until

from credflip import commands
from credflip.aws_lambda import handler
from credflip.errors import ConfigurationError, CredflipError, UsageError
from credflip.layout import Layout
from credflip.state import LockInfo, load_state, read_lock
from credflip.stores.ssm import SsmStore


def into_the_drain(event: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Invocations of *seconds* each until one stops in the drain (how many it takes to
    prepare, verify and switch first depends on how busy the machine is, not on
    credflip): their answers, every one paused."""
    answers: list[dict[str, Any]] = []
    while not answers or answers[-1]["stopped_in"] != "drain":
        assert len(answers) < 10, answers
        answers.append(handler(event, LambdaContext(seconds)))
        assert answers[-1]["status"] == "paused", answers
    return answers


@pytest.fixture
def env(lambda_event: dict[str, Any]) -> dict[str, Any]:
    return lambda_event


def test_stops_mid_drain_and_resumes(
    app: App, env: dict[str, Any], layout: Layout, moto_endpoint: str
) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    holder = app.connect(app.url)  # a client still on blue keeps the drain going
    try:
        answers = into_the_drain(env, 2.5)
        first = answers[0]
        assert first["from"] == "blue" and first["to"] == "green" and not first["resumed"]
        assert all(a["resumed"] and a["rotation"] == first["rotation"] for a in answers[1:])
        assert read_lock(store, layout) is None
        second = handler(env, LambdaContext(1.5))
        assert second["status"] == "paused" and second["resumed"]
    finally:
        holder.close()
    done = handler(env, LambdaContext(10))
    assert done["status"] == "done" and done["resumed"] and done["rotation"] == first["rotation"]
    assert done["drain_seconds"] > 0 and set(done["timings"]) >= {"prepare", "drain", "retire"}
    assert [h.result for h in load_state(store, layout).history] == ["done"]
    # No rotation under way: "resume" does nothing, "rotate" honours min_interval.
    assert handler({**env, "mode": "resume"}, LambdaContext(10))["status"] == "idle"
    idle = handler({**env, "min_interval": "30d"}, LambdaContext(10))
    assert idle["status"] == "idle" and "last rotation finished" in idle["reason"]


def test_the_schedule_reports_a_timeout_until_the_legacy_client_leaves_then_finishes(
    app: App, env: dict[str, Any], layout: Layout, moto_endpoint: str
) -> None:
    """Invoked as the schedule would: a client that never follows the pointer opens a
    short connection to blue every 300 ms for longer than the drain timeout. Every
    invocation past the timeout answers drain_timeout and keeps blue; once the client
    is gone, invocations pause without an alarm until one finishes from the evidence the
    earlier ones kept."""
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    event = {**env, "drain_timeout": "1s"}
    stop = threading.Event()
    used = 0

    def legacy() -> None:
        nonlocal used
        while not stop.is_set():
            with app.connect(app.url) as conn:  # blue's URL, read once at "cold start"
                conn.execute("SELECT 1")
            used += 1
            stop.wait(0.3)

    client = threading.Thread(target=legacy, daemon=True)
    client.start()
    try:
        # An invocation may end before the timeout, or a busy machine may keep it from its
        # samples (paused); none may finish, and the alarm comes on each that samples.
        statuses: list[str] = []
        while statuses.count("drain_timeout") < 2:
            assert len(statuses) < 8, statuses
            statuses.append(handler(event, LambdaContext(3.0))["status"])
        assert set(statuses) <= {"paused", "drain_timeout"}, statuses
        assert load_state(store, layout).current is not None
        with app.connect(app.url) as conn:  # blue still logs in
            conn.execute("SELECT 1")
    finally:
        stop.set()
        client.join(timeout=10)
    assert used > 10 and not client.is_alive()
    # The first invocation after the client left may still see its last uses (made after
    # the previous invocation's last sample): it alarms once more. How long the window
    # then lasts depends on how many of the client's pauses the drain saw (a client seen
    # a few times may arrive at random: many mean pauses): later invocations see no use,
    # so they pause, without an alarm, until one finishes.
    after: list[str] = []
    while True:
        answer = handler(event, LambdaContext(30.0))
        if answer["status"] == "done":
            break
        after.append(answer["status"])
        assert after[1:].count("drain_timeout") == 0 and len(after) < 5, (after, answer)
    assert set(after) <= {"drain_timeout", "paused"}, after
    assert answer["resumed"], answer
    assert app.locked_marker in login_error(app.url)


def test_terminate_ends_an_idle_session_once_the_drain_could_finish(
    app: App, env: dict[str, Any]
) -> None:
    holder = app.connect(app.url)  # a pooled connection of blue, idle
    try:
        ended = handler({**env, "terminate": True}, LambdaContext(30))
        assert ended["status"] == "done" and ended["terminated"] == 1
    finally:
        holder.close()


def test_lock_of_a_dead_lambda_expires(
    env: dict[str, Any], layout: Layout, moto_endpoint: str
) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    live = LockInfo(
        "sbx_user1051", "169.254.10.1", 8, time.time(), token="a", expires_at=time.time() + 600
    )
    store.put(layout.lock, live.to_json(), overwrite=False)
    busy = handler(env, LambdaContext(10))
    assert busy["status"] == "locked" and "169.254.10.1" in busy["reason"]
    store.delete(layout.lock)
    dead = LockInfo(
        "sbx_user1051", "169.254.10.1", 8, time.time() - 900, token="b", expires_at=time.time() - 1
    )
    store.put(layout.lock, dead.to_json(), overwrite=False)
    assert handler(env, LambdaContext(10))["status"] == "done"


def test_bad_events(env: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="must name the environment"):
        handler({}, LambdaContext(10))
    with pytest.raises(UsageError, match="invalid mode"):
        handler({**env, "mode": "sometimes"}, LambdaContext(10))
    with pytest.raises(UsageError, match="invalid client_ttl"):
        handler({**env, "client_ttl": "60"}, LambdaContext(10))


def test_min_drain_from_the_event_holds_across_invocations(
    env: dict[str, Any], layout: Layout, moto_endpoint: str
) -> None:
    event = {**env, "min_drain": "8s", "require_counters": True}
    into_the_drain(event, 4.0)  # stops in the drain, before 8 s
    # The next invocation forgets to say it: the rotation keeps its floor.
    done = handler(env, LambdaContext(20))
    assert done["status"] == "done" and done["resumed"]
    assert done["drain_seconds"] >= 8.0


def test_a_machine_whose_clock_is_ahead_does_not_shorten_the_quiet_window(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {**env, "quiet": "60s", "require_counters": True}
    into_the_drain(event, 5.0)  # quiet since the cache wait, then paused
    # The next run is on a machine whose clock is an hour ahead: the evidence
    # kept in the state is on the database's clock, so the window is not over.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    second = handler(event, LambdaContext(5.0))
    assert second["status"] == "paused" and second["resumed"], second


def test_without_a_counter_the_event_must_accept_sessions_only(
    cluster: Cluster, moto_endpoint: str, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(cluster, rich=False, counters=False)
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    try:
        commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
        monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
        monkeypatch.setenv("CREDFLIP_STORE", store.url)
        event: dict[str, Any] = {
            "env": layout.env,
            "client_ttl": "200ms",
            "quiet": "200ms",
            "margin": "500ms",
        }
        before = dump(store)
        with pytest.raises(ConfigurationError, match="no login counter") as refused:
            handler(event, LambdaContext(10))
        assert '"sessions_only": true' in str(refused.value)
        assert "CREATE EXTENSION pg_stat_statements" in str(refused.value)
        assert dump(store) == before
        with pytest.raises(UsageError, match="invalid sessions_only 'yes'"):
            handler({**event, "sessions_only": "yes"}, LambdaContext(10))
        done = handler({**event, "sessions_only": True}, LambdaContext(10))
        assert done["status"] == "done" and done["to"] == "green"
        assert load_state(store, layout).sessions_only is False
    finally:
        store.close()


def test_a_sessions_only_drain_longer_than_one_invocation_finishes(
    cluster: Cluster, moto_endpoint: str, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No login counter, the risk accepted (init --sessions-only), and a quiet window
    (3 s) longer than one invocation's drain (1.5 s): each invocation carries on the
    window the last one began, and the drain finishes; no invocation starts it over."""
    app = make_app(cluster, rich=False, counters=False)
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    try:
        commands.init(
            store, layout, admin_url=app.admin_url, writer_url=app.url, sessions_only=True
        )
        monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
        monkeypatch.setenv("CREDFLIP_STORE", store.url)
        event = {"env": layout.env, "client_ttl": "200ms", "quiet": "3s", "margin": "500ms"}
        statuses = []
        for _ in range(10):
            statuses.append(handler(event, LambdaContext(2.0))["status"])
            if statuses[-1] != "paused":
                break
        # A window of 3 s in runs of at most 1.5 s each, back to back: done from the
        # second on (the first one also prepares, verifies and switches); before,
        # every invocation began the window anew and none ever finished.
        assert statuses[-1] == "done" and len(statuses) >= 2, statuses
        assert app.locked_marker in login_error(app.url)
    finally:
        store.close()


def test_a_login_between_two_invocations_past_the_timeout_raises_the_alarm(
    app: App, env: dict[str, Any], layout: Layout, moto_endpoint: str
) -> None:
    """A client whose logins fall between invocations: the invocation after one, past the
    timeout and unable to finish its window within its own time, answers drain_timeout
    (not paused); once the client is gone, the drain finishes."""
    event = {**env, "quiet": "3s", "drain_timeout": "1s"}
    into_the_drain(event, 2.0)
    # On a busy machine the drain may begin late in an invocation's time: the next one
    # is past the timeout only once a second has gone since the switch.
    rotation = load_state(SsmStore(region="us-east-1", endpoint_url=moto_endpoint), layout).current
    assert rotation is not None and rotation.switched_at is not None
    switched = rotation.switched_at
    wait_until(lambda: time.time() > switched + 1.0, "second since the switch")
    app.execute(app.url, "SELECT 1")  # blue, between two invocations
    # An invocation that a busy machine kept from its first sample pauses and has seen
    # nothing; the first one that samples must raise the alarm, not finish.
    answers = [handler(event, LambdaContext(2.0))]
    while answers[-1]["status"] == "paused":
        assert len(answers) < 8, answers
        answers.append(handler(event, LambdaContext(2.0)))
    alarm = answers[-1]
    assert alarm["status"] == "drain_timeout", answers
    assert "changed since the last run" in alarm["reason"] and "still in use" in alarm["reason"]
    statuses = []
    for _ in range(8):
        statuses.append(handler(event, LambdaContext(2.0))["status"])
        if statuses[-1] != "paused":
            break
    assert statuses[-1] == "done" and "drain_timeout" not in statuses, statuses
    assert app.locked_marker in login_error(app.url)


def test_metrics_and_phase_lines(
    app: App, env: dict[str, Any], layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = app.connect(app.url)
    try:
        capsys.readouterr()
        assert handler({**env, "drain_timeout": "1s"}, LambdaContext(5.0))["status"] == (
            "drain_timeout"
        )
        metrics, lines = emitted(capsys.readouterr().out)
    finally:
        holder.close()
    # The holder still used blue after the cache wait: named, and counted.
    (legacy,) = [line for line in lines if line["event"] == "legacy_clients"]
    assert legacy["count"] == 1 and legacy["env"] == layout.env
    (client,) = legacy["clients"]
    assert (client["client"], client["database"]) == ("127.0.0.1", app.database)
    assert client["name"].startswith(f"127.0.0.1 on {app.database} via 127.0.0.1:")
    (timeout,) = metrics
    definition = timeout["_aws"]["CloudWatchMetrics"][0]
    assert definition["Namespace"] == "credflip"
    assert ["env", "service"] in definition["Dimensions"] and timeout["env"] == layout.env
    assert (timeout["DrainTimeouts"], timeout["RotationsFailed"], timeout["RotationsDone"]) == (
        [1.0],
        [0.0],
        [0.0],
    )
    assert timeout["SessionsLeft"] == [1.0]  # the holder
    assert timeout["LegacyClients"] == [1.0]

    done = handler(env, LambdaContext(30))
    assert done["status"] == "done"
    metrics, lines = emitted(capsys.readouterr().out)
    (finished,) = metrics
    assert finished["RotationsDone"] == [1.0] and finished["DrainTimeouts"] == [0.0]
    assert finished["LegacyClients"] == [1.0]  # what this rotation's drain saw
    assert done["legacy_clients"] == 1
    assert finished["DrainSeconds"][0] == pytest.approx(done["drain_seconds"], abs=0.01)
    phases = [line["phase"] for line in lines if line["event"] == "phase"]
    assert phases == ["drain", "retire", "done"]
    assert {line["rotation"] for line in lines} == {done["rotation"]}
    assert all(line["env"] == layout.env for line in lines)


def test_a_failed_rotation_is_counted(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", "postgresql://nobody:wrong@127.0.0.1:1/x")
    capsys.readouterr()
    with pytest.raises(CredflipError):
        # The first connection is retried (a failover) within reconnect_timeout.
        handler({**env, "reconnect_timeout": "1s"}, LambdaContext(30))
    metrics, lines = emitted(capsys.readouterr().out)
    assert [m["RotationsFailed"] for m in metrics] == [[1.0]]
    assert lines[-1]["event"] == "failed" and "wrong" not in lines[-1]["error"]
