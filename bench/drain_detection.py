"""Does the drain retire a user that a legacy client still uses? Default options vs one TTL.

A *legacy* client read its URL before the switch and keeps it (a Lambda that
resolved at cold start, a scheduled job). It opens one short connection per
request (a few milliseconds, far shorter than the drain's 200 ms sample
interval), either every *P* seconds (a periodic job, with a random phase per
trial) or at random (Poisson arrivals at a given rate, exponential waits).

For each engine and client, trials run in two columns side by side, in the
same run and at the same time:

- **baseline**: the old policy, a quiet window of one client TTL
  (``RotateOptions(client_ttl=1, quiet=1)``);
- **default**: the default options, only ``--client-ttl 1s``
  (``RotateOptions(client_ttl=1)``, a quiet window of 40 TTLs).

Both have only a drain timeout that bounds the trial (75 s): long enough that
a wrong retire at default options (41.1 s after the switch at the earliest)
happens inside it. A trial is *correct* when the rotation ends with a drain
timeout (the old user kept, resumable) and the client had no failed request;
*missed* when the drain retired the old user while the client still ran:
the client then runs on for 2.5 of its mean pauses (at most 25 s) to show
what that cost, in failed requests. Every missed trial is listed after the
table.

Servers: a private PostgreSQL with pg_stat_statements preloaded (created in
each app database) and a private MariaDB with ``userstat`` on, both started
here and deleted afterwards. The trials of one row (both columns) run at the
same time, each with its own app database, users and env.

    python bench/drain_detection.py [--trials 10] [--engines postgresql,mysql]
        [--rows periodic:0.5,...,poisson:0.2] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from children import join_all
from private_servers import Mariadb, Postgres

from credflip import commands
from credflip.demo import Worker
from credflip.engines import engine_class
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.rotation import RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

TTL = 1.0
#: Seconds from the switch after which a drain that still sees use stops.
DRAIN_TIMEOUT = 75.0
#: After a wrong retire the client runs on for this many mean pauses, at most SHOW_MAX s.
SHOW_PAUSES, SHOW_MAX = 2.5, 25.0


@dataclass(frozen=True)
class Client:
    """A legacy client's schedule: every *value* seconds, or Poisson at *value* per second."""

    kind: str  # "periodic" or "poisson"
    value: float

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value:g}"

    @property
    def label(self) -> str:
        return f"every {self.value:g} s" if self.kind == "periodic" else f"Poisson {self.value:g}/s"

    @property
    def mean_pause(self) -> float:
        return self.value if self.kind == "periodic" else 1.0 / self.value

    def waits(self, rng: random.Random) -> Callable[[], float]:
        """The seconds before each request: the first one a random phase."""
        if self.kind == "poisson":
            return lambda: rng.expovariate(self.value)
        first = [rng.uniform(0.0, self.value)]
        return lambda: first.pop() if first else self.value


ROWS = [
    Client("periodic", 0.5),
    Client("periodic", 1.5),
    Client("periodic", 3.0),
    Client("periodic", 5.0),
    Client("periodic", 9.0),
    Client("poisson", 1.0),
    Client("poisson", 0.2),
]
QUICK_ROWS = ("periodic:1.5", "poisson:1")


def baseline(timeout: float) -> RotateOptions:
    """The old policy: a quiet window of one client TTL."""
    return RotateOptions(client_ttl=TTL, quiet=TTL, drain_timeout=timeout)


def default(timeout: float) -> RotateOptions:
    """The default options, only ``--client-ttl 1s``."""
    return RotateOptions(client_ttl=TTL, drain_timeout=timeout)


COLUMNS: dict[str, Callable[[float], RotateOptions]] = {"baseline": baseline, "default": default}


@dataclass
class Cell:
    engine: str
    client: Client
    column: str
    timeout: float = DRAIN_TIMEOUT
    correct: int = 0
    trials: int = 0
    failed_requests: int = 0
    #: Seconds from the switch to the retire, per missed trial.
    retired_after: list[float] = field(default_factory=list)
    #: One line per trial that was not correct.
    wrong: list[str] = field(default_factory=list)

    @property
    def options(self) -> RotateOptions:
        return COLUMNS[self.column](self.timeout)


class Legacy:
    """One short connection per request, always with the same URL, on *client*'s schedule.

    A failed request is counted; a thread that dies of anything else fails the
    trial (:meth:`check`, and on leaving the ``with``).
    """

    def __init__(self, url: DbUrl, client: Client, rng: random.Random) -> None:
        self.url, self.client = url, client
        self.wait = client.waits(rng)
        self.ok = self.failed = 0
        self.first_error = ""
        self.stop = threading.Event()
        self.thread = Worker(self.loop, name=f"the legacy client of {url.user}")

    def loop(self) -> None:
        cls = engine_class(self.url.scheme)
        due = time.monotonic()
        while True:
            due += self.wait()
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                conn = cls.client_connect(self.url)
                try:
                    conn.cursor().execute("SELECT 1")
                finally:
                    conn.close()
                self.ok += 1
            except Exception as exc:
                self.failed += 1
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"

    def __enter__(self) -> Legacy:
        self.thread.start()
        return self

    def check(self) -> None:
        self.thread.check()

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.check()


# -- trials -------------------------------------------------------------------


def trial(server: Any, cell: Cell, number: int, lock: threading.Lock, tmp: Path) -> None:
    admin, url = server.app()
    store = SqliteStore(tmp / f"{url.user}.db")
    layout = Layout(url.user)
    commands.init(store, layout, admin_url=admin, writer_url=url)
    retired_after: float | None = None
    with Legacy(url, cell.client, random.Random()) as legacy:
        try:
            result = rotate(
                store,
                layout,
                admin_url=admin,
                options=cell.options,
                on_event=lambda _e: legacy.check(),
            )
            assert result.finished and result.drain_seconds is not None, result
            retired_after = result.drain_seconds
            # Let a retired user show what it cost: the client's next requests.
            legacy.stop.wait(min(SHOW_MAX, SHOW_PAUSES * cell.client.mean_pause))
        except DrainTimeout:
            pass
    store.close()
    what = f"{cell.engine} {cell.client.label} {cell.column} trial {number}"
    with lock:
        cell.trials += 1
        cell.failed_requests += legacy.failed
        if retired_after is not None:
            cell.retired_after.append(retired_after)
            cell.wrong.append(
                f"MISSED {what}: retired {retired_after:.1f} s after the switch; "
                f"{legacy.failed} of the client's {legacy.ok + legacy.failed} requests failed"
                + (f" ({legacy.first_error})" if legacy.first_error else "")
            )
        elif legacy.failed:
            cell.wrong.append(
                f"FAILED {what}: the user was kept but {legacy.failed} request(s) failed: "
                f"{legacy.first_error}"
            )
        else:
            cell.correct += 1


def run_cells(server: Any, cells: Sequence[Cell], trials: int, tmp: Path) -> None:
    """Every cell's trials at the same time; the first that dies raises here, with its error."""
    lock = threading.Lock()
    threads = [
        Worker(
            functools.partial(trial, server, cell, n, lock, tmp),
            name=f"trial {n} of {cell.engine} {cell.client.label} {cell.column}",
        )
        for cell in cells
        for n in range(1, trials + 1)
    ]
    for thread in threads:
        thread.start()
    join_all(threads)


def held(cell: Cell) -> str:
    return f"{cell.correct}/{cell.trials}"


def mean_drain(cell: Cell) -> str:
    times = cell.retired_after
    return f"{sum(times) / len(times):.1f}" if times else "-"


def table(rows: Sequence[Sequence[Cell]], trials: int, timeout: float) -> list[str]:
    lines = [
        f"drain kept the old user under a legacy client ({trials} trials per cell; client TTL "
        f"{TTL:g} s; drain timeout {timeout:g} s; one connection of a few ms per request)",
        f"{'engine':<11} {'client':<14} {'baseline (1 TTL quiet)':>24} "
        f"{'default (40 TTL quiet)':>24}   mean drain s of retired trials",
        f"{'':<11} {'':<14} {'correct':>8} {'failed requests':>15} "
        f"{'correct':>8} {'failed requests':>15}   baseline / default",
    ]
    for base, dflt in rows:
        lines.append(
            f"{base.engine:<11} {base.client.label:<14} {held(base):>8} "
            f"{base.failed_requests:>15} {held(dflt):>8} {dflt.failed_requests:>15}   "
            f"{mean_drain(base)} / {mean_drain(dflt)}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="per cell (default 10)")
    parser.add_argument("--engines", default="postgresql,mysql")
    parser.add_argument(
        "--rows",
        default=None,
        help="clients, comma-separated: " + ",".join(c.key for c in ROWS) + " (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 trials, two rows, a 10 s drain timeout (shorter than the "
        "default quiet window, so that column cannot retire)",
    )
    args = parser.parse_args(argv)
    trials = args.trials or (2 if args.quick else 10)
    timeout = 10.0 if args.quick else DRAIN_TIMEOUT
    keys = args.rows.split(",") if args.rows else QUICK_ROWS if args.quick else None
    by_key = {c.key: c for c in ROWS}
    unknown = [k for k in keys or () if k not in by_key]
    if unknown:
        parser.error(f"unknown --rows {','.join(unknown)}: use {','.join(by_key)}")
    clients = [by_key[k] for k in keys] if keys else ROWS
    makers: dict[str, Callable[[], Any]] = {
        # Entries evicted from pg_stat_statements count as use for every drain:
        # room for every trial's statements keeps evictions out of the numbers.
        "postgresql": functools.partial(Postgres, **{"pg_stat_statements.max": "50000"}),
        "mysql": Mariadb,
    }
    rows: list[list[Cell]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.engines.split(","):
            server = makers[name]()
            try:
                for client in clients:
                    pair = [Cell(name, client, column, timeout) for column in COLUMNS]
                    started = time.monotonic()
                    run_cells(server, pair, trials, Path(tmp))
                    rows.append(pair)
                    print(
                        f"  {name} {client.label}: baseline {held(pair[0])} correct, "
                        f"{pair[0].failed_requests} failed | default {held(pair[1])} correct, "
                        f"{pair[1].failed_requests} failed ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
            finally:
                server.close()
    print()
    print("\n".join(table(rows, trials, timeout)))
    wrong = [line for row in rows for cell in row for line in cell.wrong]
    if wrong:
        print()
        print("\n".join(wrong))
    print(f"\n{time.monotonic() - began:.0f} s in all")
    # A default-column trial that was not correct is a product bug.
    return 1 if any(cell.correct < cell.trials for _, cell in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
