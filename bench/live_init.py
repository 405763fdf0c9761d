"""The application's slowest request while ``credflip init`` adopts a live database.

Per engine (private PostgreSQL 15 and 18, a private MariaDB), the scene of
tests/test_lock_queue.py with its helpers: the application serves a request
every 20 ms on its own session (``SELECT count(*) FROM orders`` as the app's
user) while another of its sessions sits idle in a transaction that read
``orders`` (``BEGIN; SELECT count(*) FROM orders``: a slow request, a forgotten
``BEGIN``). ``credflip init`` runs as a child process (``python -m credflip
init``, URLs in its environment) against that database; the idle transaction
ends ``--hold`` seconds after init started. Every request's latency is
recorded; the script prints, per engine and mode, the slowest request, the
99th percentile, the failed requests, how many statements of credflip's the
server showed waiting for a lock, and how init ended.

Mode ``after`` is the credflip this script imports (default ``--lock-timeout``
of 1 s: a statement that waits longer is cancelled and tried again). Mode
``before`` is credflip as it was before issue 19's lock timeout (commit
9c95f7c), run from a copy of its parent f68d1a0's sources: ``--lock-timeout``
cannot switch the timeout off (it must be positive), so the baseline is that
older code itself. Both modes run in one invocation when ``--before`` is given:

    git archive f68d1a0 src | tar -x -C "$(mkdir -p /tmp/before-19 && echo /tmp/before-19)"
    python bench/live_init.py --before /tmp/before-19/src
        [--engines postgresql15,postgresql18,mysql] [--hold 5s]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import credflip

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from apps import ENGINES, AnyApp, make_app, make_my_app
from clusters import Mariadb, start_cluster
from servers import PrivateMariadb
from test_lock_queue import Traffic, idle_transaction, waiting

from credflip.durations import parse_duration

#: The sources of the credflip this script imports (mode "after").
CURRENT = Path(credflip.__file__).resolve().parent.parent


@dataclass
class Row:
    engine: str
    mode: str
    requests: int
    slowest: float
    p99: float
    failed: int
    waits: int
    outcome: str


@contextmanager
def app_maker(engine: str) -> Iterator[Callable[[], AnyApp]]:
    """A private server for *engine* (``postgresql15``, ``postgresql18``, ``mysql``) and a
    maker of new apps on it (a database whose user owns its tables)."""
    if engine.startswith("postgresql"):
        cluster = start_cluster(int(engine.removeprefix("postgresql")))
        try:
            yield lambda: make_app(cluster)
        finally:
            cluster.pg.stop()
        return
    with private_mariadb() as mariadb:
        yield lambda: make_my_app(mariadb)


@contextmanager
def private_mariadb() -> Iterator[Mariadb]:
    """A private MariaDB (userstat on: the drain's counter) with the tests' admin."""
    server = PrivateMariadb("--userstat=ON").start()
    try:
        yield Mariadb(server.add_admin(), Path("/nonexistent/general.log"), server.port)
    finally:
        server.stop()


def run_init(app: AnyApp, src: Path, hold: float, folder: Path) -> tuple[int, float, int, str]:
    """``credflip init`` from *src* behind the idle transaction, which ends *hold* seconds
    after init started: its exit code, seconds, lock waits seen and output."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "CREDFLIP_ADMIN_URL": app.admin_url.secret,
        "CREDFLIP_WRITER_URL": app.url.secret,
    }
    argv = [sys.executable, "-m", "credflip", "init", "--env", "live",
            "--store", f"sqlite:///{folder / 'params.db'}"]  # fmt: skip
    output = folder / "init.out"
    with idle_transaction(app) as blocker, output.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        waits: set[tuple[object, ...]] = set()
        while proc.poll() is None:
            waits |= waiting(app)
            if time.monotonic() - started >= hold:
                blocker.end()
            if time.monotonic() - started > hold + 120:
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
        seconds = time.monotonic() - started
    return proc.returncode, seconds, len(waits), output.read_text()


def scene(engine: str, mode: str, app: AnyApp, src: Path, hold: float) -> Row:
    with tempfile.TemporaryDirectory() as tmp, Traffic(app) as traffic:
        code, seconds, waits, out = run_init(app, src, hold, Path(tmp))
    secrets = (app.password, app.admin_url.password or "")
    if any(s and s in out for s in secrets):
        print(f"{engine} {mode}: init printed a password", flush=True)
    lines = out.strip().splitlines() or [""]
    if code == 0:
        outcome = f"finished, {seconds:.1f} s"
    else:
        outcome = f"exit {code} after {seconds:.1f} s: {lines[-1]}"
    ms = [1000 * s for s in traffic.latencies]
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else max(ms, default=0.0)
    row = Row(engine, mode, len(ms), max(ms, default=0.0), p99, len(traffic.failures), waits,
              outcome)  # fmt: skip
    print(f"{row}", flush=True)
    for failure in traffic.failures[:3]:
        print(f"  failed: {failure}", flush=True)
    return row


def table(rows: list[Row], hold: float) -> str:
    head = (
        f"idle transaction ends {hold:g} s after init starts; a request every 20 ms\n\n"
        "| engine | mode | requests | slowest request (ms) | p99 (ms) | failed requests "
        "| credflip lock waits | init outcome |\n|---|---|---:|---:|---:|---:|---:|---|"
    )
    body = [
        f"| {r.engine} | {r.mode} | {r.requests} | {r.slowest:.0f} | {r.p99:.0f} | {r.failed} "
        f"| {r.waits} | {r.outcome} |"
        for r in rows
    ]
    return "\n".join([head, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--hold", default="5s", help="how long the idle transaction stays")
    parser.add_argument("--before", type=Path, help="src/ of credflip before issue 19")
    args = parser.parse_args()
    hold = parse_duration(args.hold, what="--hold")
    modes = [("before", args.before)] if args.before else []
    modes.append(("after", CURRENT))
    rows = []
    for engine in args.engines.split(","):
        with app_maker(engine) as new_app:
            rows += [scene(engine, mode, new_app(), src, hold) for mode, src in modes]
    print()
    print(table(rows, hold))


if __name__ == "__main__":
    main()
