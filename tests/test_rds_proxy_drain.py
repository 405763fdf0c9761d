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
from helpers import login_error, wait_until
from proxies import REGION, Aws, behind_proxy, command_in, make_aws
from servers import PrivateMariadb

from credflip import commands
from credflip.drain import DrainPolicy, DrainTracker, Evidence, Reading, Verdict
from credflip.drain.policy import LEGACY_WINDOWS
from credflip.engines import SessionGroup, Sessions, engine_for
from credflip.errors import ConfigurationError, DrainTimeout
from credflip.layout import Color, Layout
from credflip.rotation import RotateOptions, rotate


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    monkeypatch.setenv("AWS_ENDPOINT_URL_RDS", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    return make_aws(moto_endpoint)


# -- the tracker, on a fake clock -------------------------------------------------


def pooled(t: float, last_change: float, *, busy: bool = False) -> Reading:
    """Two pooled sessions of the old user at *t*, the last state change at *last_change*."""
    group = SessionGroup(
        "10.0.9.7", "", 2, idle_for=None if busy else t - last_change, last_change=last_change
    )
    return Reading("db-1:5432", Sessions((group,)), {"statements": 7})


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
    result = rotate(store, layout, admin_url=app.admin_url, options=behind)
    assert result.finished and result.resumed
    # The drain ends the idle session rather than wait for it: its window is 0.4 s, the
    # bound generous for a busy machine, the default drain timeout far beyond it.
    assert time.monotonic() - started < 10
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
