"""The machine's own database servers are out of every test's reach (shared_servers.py):
a connection to one is refused, in the test process and in the processes a test starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pymysql
import pytest
import shared_servers
from shared_servers import guarded_env


def test_a_connection_to_the_machines_mariadb_is_refused_and_recorded() -> None:
    before = len(shared_servers.REACHED)
    try:
        with pytest.raises(pymysql.err.OperationalError, match="not of a test"):
            pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5)
        assert shared_servers.REACHED[before:] == ["127.0.0.1:3306"]
    finally:
        del shared_servers.REACHED[before:]  # this test's own, on purpose


def test_addresses_that_are_the_machines_servers() -> None:
    assert shared_servers.shared(("127.0.0.1", 5432)) == "127.0.0.1:5432"
    assert shared_servers.shared(("::1", 3306, 0, 0)) == "::1:3306"
    assert shared_servers.shared("/run/mysqld/mysqld.sock") == "/run/mysqld/mysqld.sock"
    assert shared_servers.shared(b"/var/run/postgresql/.s.PGSQL.5432")
    assert shared_servers.shared(("127.0.0.1", 5433)) is None
    assert shared_servers.shared(("10.0.0.5", 5432)) is None
    assert shared_servers.shared("/tmp/credflip-mariadb-x/s.sock") is None  # noqa: S108


SPAWNS = """
import multiprocessing, socket, sys
if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(
        target=socket.create_connection, args=(("127.0.0.1", 5432),)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 1, child.exitcode
    try:
        socket.create_connection(("127.0.0.1", 3306))
    except ConnectionRefusedError as exc:
        sys.exit(f"refused: {exc}")
"""


def test_a_process_a_test_starts_and_its_children_are_refused_too(tmp_path: Path) -> None:
    guard = tmp_path / "guard"
    proc = subprocess.run(
        [sys.executable, "-c", SPAWNS],
        env=guarded_env(guard),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stderr.strip().splitlines()[-1] == (
        "refused: 127.0.0.1:3306 is a server of the machine, not of a test"
    ), proc.stderr
    reached = (guard / "reached").read_text().splitlines()
    assert [line.split(" ")[0] for line in reached] == ["127.0.0.1:5432", "127.0.0.1:3306"]
    assert len({line.split(" ", 1)[1] for line in reached}) == 2  # two processes
