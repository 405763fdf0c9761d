"""The soak, short: 10 back-to-back rotations under mixed load on each engine.

The soak runs its own servers (bench/private_servers.py): its processes run out of
reach of the machine's own MariaDB and PostgreSQL (shared_servers.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benches import run_bench, shadowing
from shared_servers import guarded_env

LAST = re.compile(
    r"^soak: (\d+) rotations, (\d+) requests, (\d+) failed, (\d+) lost, rss (\d+)→(\d+) MiB$"
)


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_ten_rotations_under_load_fail_and_lose_nothing(engine: str, tmp_path: Path) -> None:
    plot = tmp_path / "soak.png"
    guard = tmp_path / "guard"
    proc, _seconds = run_bench(
        "soak.py",
        *("--engine", engine, "--rotations", "10", "--plot", str(plot)),
        env=guarded_env(guard),
        timeout=600,
    )
    assert not (guard / "reached").exists(), (guard / "reached").read_text()
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = LAST.match(lines[-1])
    assert found, lines[-1]
    rotations, requests, failed, lost, _start, _end = map(int, found.groups())
    assert (rotations, failed, lost) == (10, 0, 0)
    assert requests > 500
    assert "rotations  elapsed" in proc.stdout and plot.stat().st_size > 10_000


def test_a_client_process_that_dies_at_import_fails_the_soak_with_its_error(
    tmp_path: Path,
) -> None:
    """The soak's clients run in a child process that imports SQLAlchemy; the
    rotator (the parent) never does. A child that cannot import it dies at
    once, and the parent must say so instead of waiting on its pipe forever."""
    env = shadowing(tmp_path, "sqlalchemy", 'raise ImportError("no sqlalchemy in this test")\n')
    proc, seconds = run_bench("soak.py", "--engine", "postgresql", "--rotations", "3", env=env)
    assert proc.returncode != 0
    assert seconds < 30
    last = proc.stderr.strip().splitlines()[-1]
    assert "client process" in last and "ImportError: no sqlalchemy in this test" in last, (
        proc.stderr[-3000:]
    )
