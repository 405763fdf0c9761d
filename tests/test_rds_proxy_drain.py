"""The drain behind RDS Proxy: the proxy's idle sessions are not use, what runs on them is.

The pooled connections RDS Proxy keeps to the database stand in here as
sessions a test opens and leaves open (the proxy's own behaviour is not
reproducible off AWS); they are real sessions of the old user on a real
PostgreSQL or MariaDB. The tracker's rule is also checked on a fake clock.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from apps import App, make_app, make_my_app, serial
from clusters import Cluster, Mariadb
from helpers import login_error, stored_url, wait_until
from proxies import Aws, behind_proxy, command_in
from servers import PrivateMariadb

from credflip import commands
from credflip.drain import DrainPolicy, DrainStatus, DrainTracker, Evidence, Reading, Verdict
from credflip.drain.policy import LEGACY_WINDOWS
from credflip.engines import SessionGroup, Sessions, engine_for
from credflip.errors import ConfigurationError, DrainTimeout, RotationError
from credflip.layout import Color, Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    read_pointer,
    rollback,
    rotate,
)
from credflip.state import Phase

# -- the tracker, on a fake clock -------------------------------------------------


def pooled(t: float, last_change: float, *, busy: bool = False, pids: int = 2) -> Reading:
    """Pooled sessions of the old user at *t* (backends 100, 101...; at most *pids* of
    them): the last one's latest state change at *last_change*, the others' long before."""
    changes = ((100 + n, -10.0 - n) for n in range(pids - 1))
    group = SessionGroup(
        "10.0.9.7",
        "",
        pids,
        idle_for=None if busy else t - last_change,
        changes=(*changes, (200, last_change)) if pids else (),
    )
    return Reading("db-1:5432", Sessions((group,) if pids else ()), {"statements": 7})


def test_behind_a_pooler_idle_sessions_are_held_and_a_statement_on_one_is_use() -> None:
    policy = DrainPolicy(client_ttl=1.0, quiet=3.0)

    def drain(
        last_change: Any, *, proxied: bool = True, busy: float | None = None
    ) -> tuple[float | None, DrainTracker]:
        trk = DrainTracker(policy, switched_at=0.0, timeout_at=60.0, proxied=proxied)
        t = 0.0
        while t < 60:
            status = trk.observe(t, [pooled(t, last_change(t), busy=t == busy)])
            if status.verdict is Verdict.DONE:
                assert status.held == 2  # ended when the drain finishes
                return t, trk
            t = round(t + 0.5, 3)
        return None, trk

    # Opened before the switch and never used since: the window runs from the cache wait.
    assert drain(lambda t: -5.0)[0] == pytest.approx(1.1 + 3.0, abs=0.5)
    # A sample that sees them run a statement starts the window over (a legacy client's:
    # LEGACY_WINDOWS times as long until its rhythm is known).
    done = drain(lambda t: -5.0, busy=4.0)[0]
    assert done == pytest.approx(4.0 + 0.5 + LEGACY_WINDOWS * 3.0)
    # Without the pooler the same sessions are use until the timeout.
    assert drain(lambda t: -5.0, proxied=False)[0] is None
    # A client reuses a pooled session every 2 s until 10 s, between two samples.
    done, trk = drain(lambda t: min(t, 10.0) // 2 * 2)
    assert done is not None and done >= 10.0 + 3.0
    # What the next run compares its first sample with.
    kept = Evidence.from_dict(trk.evidence("app_blue").to_dict())
    assert kept.activity == {"db-1:5432": 10.0}
    again = DrainTracker(policy, switched_at=-100.0, timeout_at=60.0, evidence=kept, proxied=True)
    assert again.observe(0.0, [pooled(0.0, 10.0)]).reasons == ()
    moved = DrainTracker(policy, switched_at=-100.0, timeout_at=60.0, evidence=kept, proxied=True)
    reasons = moved.observe(0.0, [pooled(0.0, 12.5)]).reasons
    assert reasons == ("a session on db-1:5432 ran a statement since the last run",)


def test_behind_a_pooler_a_session_that_closed_is_no_quiet_but_churn_lets_the_drain_finish() -> (
    None
):
    """A closed session's last state change is gone with it: it may have run a statement
    first. Between two samples the window starts over (unknown); between two runs the kept
    window does not carry over. The pool only shrinks, so the drain still finishes."""
    policy = DrainPolicy(client_ttl=1.0, quiet=3.0)
    trk = DrainTracker(policy, switched_at=0.0, timeout_at=5.0, proxied=True)
    t, status = 0.0, None
    # The proxy closes one of five idle sessions every 2 s (at 2, 4, 6, 8 s), past the timeout.
    while t < 60:
        status = trk.observe(t, [pooled(t, -5.0, pids=5 - min(int(t // 2), 4))])
        if status.verdict is Verdict.DONE:
            break
        assert status.verdict is not Verdict.TIMEOUT  # a closed session is no use
        if t in (2.0, 4.0, 6.0, 8.0):
            assert status.reasons == (
                "1 session(s) of the old user on db-1:5432 closed since the last sample: what "
                "they ran before cannot be told",
            )
            assert status.quiet == 0.0
        t = round(t + 0.5, 3)
    assert status is not None and status.verdict is Verdict.DONE
    assert t == 8.0 + 0.5 + 3.0  # a window after the last one closed
    kept = Evidence.from_dict(trk.evidence("app_blue").to_dict())
    assert set(kept.pooled) == {"db-1:5432"}

    def next_run(pids: int) -> list[Verdict]:
        """A run from t=30 on that sees *pids* sessions: its verdicts until DONE."""
        again = DrainTracker(policy, switched_at=0.0, timeout_at=5.0, evidence=kept, proxied=True)
        times = (30.0, 33.0, 36.0)
        verdicts = [again.observe(t, [pooled(t, -5.0, pids=pids)]).verdict for t in times]
        return verdicts[: verdicts.index(Verdict.DONE) + 1]

    # The session the last sample saw, unchanged: the window the last run began carries over.
    assert next_run(1) == [Verdict.DONE]
    # Gone since: the window starts over in this run, at its next sample.
    assert next_run(0) == [Verdict.IN_USE, Verdict.QUIET, Verdict.DONE]


# -- PostgreSQL -------------------------------------------------------------------


def test_an_idle_session_left_open_holds_the_drain_until_the_env_goes_behind_the_proxy(
    app: App, aws: Aws, layout: Layout
) -> None:
    store = aws.store()
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    pool = app.connect(app.url)  # a connection the proxy keeps to the database as blue
    pool.execute("SELECT 1")
    options = RotateOptions(client_ttl=0.2, quiet=0.4, drain_timeout=1.0)
    with pytest.raises(DrainTimeout):
        rotate(store, layout, admin_url=app.admin_url, options=options)
    # The rotation waits in its drain; it resumes behind the proxy.
    name = aws.proxy()
    behind = RotateOptions(
        client_ttl=0.2, quiet=0.4, rds_proxy=name, rds_proxy_endpoint=f"localhost:{app.url.port}"
    )
    with pytest.raises(ConfigurationError) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=behind)
    aws.register(name, command_in(str(caught.value)))
    started = time.monotonic()
    events: list[Event] = []
    result = rotate(store, layout, admin_url=app.admin_url, options=behind, on_event=events.append)
    assert result.finished and result.resumed
    # The drain ends the idle session rather than wait for it: its window is 0.4 s, the
    # bound generous for a busy machine, the default drain timeout far beyond it.
    assert time.monotonic() - started < 10
    # The sessions the drain ended are no use at the retire's last look.
    phases = [e.phase for e in events if isinstance(e, PhaseStarted)]
    assert phases == [Phase.DRAIN, Phase.RETIRE, Phase.DONE]
    # The proxy's idle session was ended with the drain, and blue is locked.
    assert result.terminated == 1
    with pytest.raises(psycopg.OperationalError):
        pool.execute("SELECT 1")
    assert app.locked_marker in login_error(app.url)


def test_a_client_reusing_a_pooled_session_holds_the_drain_until_it_stops(
    app: App, aws: Aws, layout: Layout
) -> None:
    """The session was opened before the drain's watch: it runs as the group role, so
    pg_stat_statements counts nothing for blue. Its state changes still show."""
    store = aws.store()
    behind_proxy(aws, store, layout, app)
    pool = app.connect(app.url)
    assert pool.execute("SELECT current_user").fetchone() == (app.group,)
    quiet, stop_at = 1.0, time.monotonic() + 4.0
    used: list[float] = []
    errors: list[BaseException] = []

    def legacy_client() -> None:
        try:
            while time.monotonic() < stop_at:
                pool.execute("SELECT count(*) FROM orders")
                used.append(time.monotonic())
                # The client's pace, not a synchronisation: busier than the drain samples,
                # so that it shows no pause for the drain to lengthen its window by.
                time.sleep(0.05)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    client = threading.Thread(target=legacy_client)
    client.start()
    try:
        options = RotateOptions(client_ttl=0.2, quiet=quiet, drain_timeout=120.0)
        result = rotate(store, layout, admin_url=app.admin_url, options=options)
        finished = time.monotonic()
    finally:
        client.join()
    assert errors == [] and len(used) > 5
    assert result.finished
    assert finished >= used[-1] + quiet
    assert result.terminated == 1  # once idle for the window, with the drain


@pytest.mark.parametrize("between", ["nothing", "statements on a pooled session it closed"])
def test_a_pooled_session_used_then_closed_between_two_runs_restarts_the_window(
    app: App, aws: Aws, layout: Layout, between: str
) -> None:
    """The proxy's sessions opened before the watch run as the group role: nothing counts
    their statements for blue. One that ran statements between two runs and then closed
    took its state change with it: the window the first run began must not carry over."""
    store = aws.store()
    behind_proxy(aws, store, layout, app)
    pool = [app.connect(app.url) for _ in range(2)]
    for conn in pool:
        assert conn.execute("SELECT current_user").fetchone() == (app.group,)
    # Paused in the drain at its deadline, the quiet window running (60 s are needed).
    first = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=60.0, deadline=time.monotonic() + 15.0),
    )
    assert not first.finished and first.stopped_in is Phase.DRAIN, first
    if between != "nothing":
        for _ in range(3):
            pool[0].execute("SELECT count(*) FROM orders")
        pool[0].close()
    seen: list[DrainStatus] = []

    def note(event: Event) -> None:
        if isinstance(event, DrainProgress):
            seen.append(event.status)

    options = RotateOptions(client_ttl=0.2, quiet=60.0, deadline=time.monotonic() + 3.0)
    second = rotate(store, layout, admin_url=app.admin_url, options=options, on_event=note)
    assert not second.finished and second.stopped_in is Phase.DRAIN
    if between == "nothing":
        assert seen[0].reasons == () and seen[0].quiet > 0.0  # carried over
    else:
        # The statements counted for the group role, but the closed session is no quiet.
        assert seen[0].reasons == (
            f"some sessions of the old user on 127.0.0.1:{app.url.port} closed since the "
            f"last run: what they ran before cannot be told",
        )
        assert seen[0].quiet == 0.0 and seen[-1].quiet < 4.0  # the window starts over
    pool[-1].close()


def test_after_a_rollback_the_proxys_idle_pool_of_the_rolled_back_color_is_drained(
    app: App, aws: Aws, layout: Layout
) -> None:
    """The proxy keeps green's pooled connections after its clients went back to blue: idle,
    they are no use (the predrain watches them, then ends them); a busy one refuses."""
    store = aws.store()
    behind_proxy(aws, store, layout, app)
    fast = RotateOptions(client_ttl=0.2, quiet=0.4)
    assert rotate(store, layout, admin_url=app.admin_url, options=fast).finished
    pool = app.connect(stored_url(store, layout, Color.GREEN))  # the proxy's, as green
    pool.execute("SELECT 1")
    assert rollback(store, layout, admin_url=app.admin_url).flipped
    # Running a statement, it is use: refused before anything changes.
    cancelled: list[BaseException] = []

    def sleep() -> None:
        try:
            pool.execute("SELECT pg_sleep(60)")
        except psycopg.errors.QueryCanceled as exc:
            cancelled.append(exc)

    busy = threading.Thread(target=sleep, daemon=True)
    busy.start()
    with app.su() as su:
        wait_until(
            lambda: (
                su.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE usename = %s AND state = 'active'",
                    [app.green],
                ).fetchall()
                != []
            ),
            "green's pooled session running its statement",
        )
    with pytest.raises(RotationError, match=f"the inactive user {app.green!r} .green. still has"):
        rotate(store, layout, admin_url=app.admin_url, options=fast)
    pool.cancel()
    busy.join(10)
    assert len(cancelled) == 1
    pool.execute("SELECT 1")
    # Idle: predrained like an old user, then ended with the predrain.
    events: list[Event] = []
    result = rotate(store, layout, admin_url=app.admin_url, options=fast, on_event=events.append)
    assert result.finished and result.terminated == 1
    assert any(
        isinstance(e, Notice) and e.message.startswith("the last rotation was rolled back")
        for e in events
    )
    with pytest.raises(psycopg.OperationalError):
        pool.execute("SELECT 1")
    assert read_pointer(store, layout) is Color.GREEN


def test_behind_the_proxy_a_missing_statement_counter_refuses_even_with_sessions_only(
    cluster: Cluster, aws: Aws, layout: Layout
) -> None:
    app = make_app(cluster, counters=False)
    store = aws.store()
    behind_proxy(aws, store, layout, app)
    options = RotateOptions(client_ttl=0.2, quiet=0.4, sessions_only=True)
    with pytest.raises(ConfigurationError) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=options)
    message = str(caught.value)
    assert message.startswith("behind RDS Proxy app-proxy-")
    assert f"127.0.0.1:{app.url.port} counts no statements per user (" in message
    assert message.endswith("nothing was changed")


# -- MySQL and MariaDB --------------------------------------------------------------


def test_mariadb_counts_the_statements_of_a_connection_left_open(mariadb: Mariadb) -> None:
    """userstat's per-user commands move while the login count does not."""
    app = make_my_app(mariadb, rich=False)
    pool = app.open(app.url)
    with engine_for(app.admin_url) as eng:
        signals = {s.name: s for s in eng.signals() if s.available}
        assert signals["user_statistics"].statements
        before = eng.observe(app.user).counters
        with pool.cursor() as cur:
            cur.execute("SELECT 1")
        # MariaDB adds a command to its user statistics after the reply has gone out.
        wait_until(
            lambda: eng.observe(app.user).counters["user_statistics"] != before["user_statistics"],
            "userstat command count for the SELECT",
        )
        after = eng.observe(app.user).counters
    assert after["user_statistics"][0] == before["user_statistics"][0]  # no new login
    pool.close()


def test_performance_schema_counts_statements_per_account() -> None:
    server = PrivateMariadb("--performance-schema=ON").start()
    try:
        password = server.add_admin(performance_schema=True)
        db = Mariadb(password, Path("/nonexistent/general.log"), server.port)
        app = make_my_app(db, rich=False)
        pool = app.open(app.url)
        with engine_for(app.admin_url) as eng:
            ps = next(s for s in eng.signals() if s.name == "performance_schema.accounts")
            assert ps.available and ps.statements
            before = eng.observe(app.user).counters["performance_schema.accounts"]
            with pool.cursor() as cur:
                cur.execute("SELECT 1")
            after = eng.observe(app.user).counters["performance_schema.accounts"]
        assert after[0] == before[0] and after[3] > before[3]  # logins, statements
        pool.close()
        # Without per-thread aggregation the table stays still: no statement counter then.
        server.sql("UPDATE performance_schema.setup_consumers SET ENABLED = 'NO' "
                   "WHERE NAME = 'thread_instrumentation'")  # fmt: skip
        with engine_for(app.admin_url) as eng:
            ps = next(s for s in eng.signals() if s.name == "performance_schema.accounts")
            assert ps.available and not ps.statements
    finally:
        server.stop()


def test_layout_names_the_secrets_after_the_prefix_and_env() -> None:
    layout = Layout(f"e{serial()}", "/apps/db")
    assert layout.rds_proxy == f"/apps/db/{layout.env}/rds-proxy"
    assert {c.value: layout.proxy_secret(c) for c in Color} == {
        "blue": f"credflip/apps/db/{layout.env}/blue",
        "green": f"credflip/apps/db/{layout.env}/green",
    }
