"""Back-to-back rotations under continuous mixed load: nothing fails, nothing is lost.

One private server on a random port (bench/private_servers.py; PostgreSQL: the
embedded one, scram-sha-256, pg_stat_statements; MySQL: a MariaDB of its own
with ``userstat`` on), one app and one env, N rotations in a row with client TTL
``--client-ttl``. A client process runs, the whole time, clients that follow
the pointer:

- ``lambda``: 4 workers that resolve per request (per-process cache, as a warm
  Lambda) and open a fresh connection for each, retrying once on a refused
  login (``call_with_refresh``);
- ``sqlalchemy``: 2 workers on one ``credflip.sqlalchemy.create_engine`` pool;
- ``pool`` (PostgreSQL): 2 workers on one ``credflip.psycopg.connection_pool``.

Every request inserts one row keyed (kind, worker, seq); a request is *ok*
when its commit returned. At the end every acknowledged row is looked up:
*lost* counts those missing. Clients that never re-read the pointer cannot
let a drain finish; they belong to the drain's tests and benchmark.

One row per 10 rotations: requests ok and failed so far, the app's sessions
per color on the server at that moment and the most seen in the window, the
resident memory of the rotator (this process) and of the client process, and
the store's size. A PNG of sessions per color and memory over time goes to
``--plot``. The last line reads
``soak: N rotations, R requests, F failed, L lost, rss A→B MiB`` where A and B
are the rotator's and the clients' memory together after the first and the
last rotation.

    python bench/soak.py --engine postgresql|mysql --rotations 200 [--client-ttl 1s]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from children import Child, ChildDied
from private_servers import Mariadb, Postgres
from soak_clients import ENV, clients, rss_mib

from credflip import commands
from credflip.demo import Worker
from credflip.durations import parse_duration
from credflip.engines import engine_class
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.resolver import Resolver
from credflip.rotation import Event, RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

WINDOW = 10
TABLE = (
    "CREATE TABLE soak (kind varchar(16), worker int, seq bigint, PRIMARY KEY (kind, worker, seq))"
)
HEADER = (
    f"{'rotations':>9} {'elapsed':>8} {'ok':>8} {'failed':>6} {'blue':>5} {'green':>5} "
    f"{'peak':>5} {'rotator MiB':>11} {'clients MiB':>11} {'store KiB':>9} {'state B':>7} "
    f"{'timeouts':>8}"
)


class Samples:
    """The monitor's samples in flat arrays of doubles (40 bytes each), so that what the
    benchmark keeps for its plot does not show as the rotator's memory growing."""

    def __init__(self) -> None:
        self.at, self.blue, self.green = array("d"), array("d"), array("d")
        self.rotator, self.clients = array("d"), array("d")

    def add(self, at: float, blue: int, green: int, rotator: float, clients: float) -> None:
        for column, value in zip(
            (self.at, self.blue, self.green, self.rotator, self.clients),
            (at, blue, green, rotator, clients),
            strict=True,
        ):
            column.append(value)

    def peak_since(self, start: float) -> int:
        return int(
            max(
                (
                    b + g
                    for t, b, g in zip(self.at, self.blue, self.green, strict=True)
                    if t >= start
                ),
                default=0,
            )
        )


@dataclass
class Soak:
    engine: str
    server: Any
    admin: DbUrl
    app: DbUrl
    users: tuple[str, str]
    samples: Samples = field(default_factory=Samples)
    child_pid: int = 0
    began: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def sessions(self) -> dict[str, int]:
        """The app's sessions per user, read as the superuser/root."""
        counts = dict.fromkeys(self.users, 0)
        if self.engine == "postgresql":
            with self.server.su() as conn:
                rows = conn.execute(
                    "SELECT usename, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1",
                    (self.app.database,),
                ).fetchall()
        else:
            rows = self.server.sql(
                "SELECT USER, COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                "GROUP BY 1",
                (self.app.database,),
            )
        for user, n in rows:
            if user in counts:
                counts[str(user)] = int(n)
        return counts

    def monitor(self) -> None:
        while not self.stop.wait(0.25):
            sessions = self.sessions()
            blue, green = (sessions[u] for u in self.users)
            self.samples.add(
                time.monotonic(), blue, green, rss_mib(os.getpid()), rss_mib(self.child_pid)
            )


def store_kib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1024


#: Seconds the rotator waits for a report: the first comes once every client kind
#: completed a request (up to 30 s each), the others at once, the last once the
#: clients stopped.
FIRST_REPORT, REPORT, LAST_REPORT = 150.0, 60.0, 120.0


def run(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.client_ttl, what="--client-ttl")
    server = Postgres() if args.engine == "postgresql" else Mariadb(prefix="cfs")
    tmp = tempfile.TemporaryDirectory()
    try:
        # Both private servers count logins per user (the drain's counter).
        admin, app = server.app(True)
        conn = engine_class(app.scheme).client_connect(app)
        try:
            conn.cursor().execute(TABLE)
            conn.commit()
        finally:
            conn.close()
        path = Path(tmp.name) / "params.db"
        store = SqliteStore(path)
        layout = Layout(ENV)
        commands.init(store, layout, admin_url=admin, writer_url=app)
        soak = Soak(args.engine, server, admin, app, (app.user, f"{app.user}_green"))
        # The clients run in a process of their own, so that their memory is theirs;
        # every wait on it fails at once with its error when it dies.
        ctx = multiprocessing.get_context("spawn")
        child = Child(ctx, clients, args.engine, str(path), ttl, what="the client process")
        monitor = Worker(soak.monitor, name="the session monitor")
        try:
            soak.child_pid = child.pid
            first = child.recv(FIRST_REPORT)
            if first["failed"]:
                print(f"clients failed before any rotation: {first['errors']}", file=sys.stderr)
            monitor.start()
            soak.began = time.monotonic()
            rss = rotate_all(args, ttl, soak, child, monitor, store, layout, path)
            child.send("stop")
            final = child.recv(LAST_REPORT)
            # The monitor reads the child's memory: stop it before the child ends.
            soak.stop.set()
            monitor.join()
            child.close(grace=30)
        finally:
            soak.stop.set()
            child.close()
            if monitor.is_alive():
                monitor.join()
        monitor.check()
        lost = count_lost(DbUrl.parse(Resolver(store=store).refresh(ENV).writer_url), final["acks"])
        if final["errors"]:
            print(f"client errors: {final['errors']}")
        if args.plot:
            plot(soak, Path(args.plot), soak.began)
            print(f"plot: {args.plot}")
        print(
            f"soak: {args.rotations} rotations, {final['ok'] + final['failed']} requests, "
            f"{final['failed']} failed, {lost} lost, rss {rss[0]:.0f}→{rss[1]:.0f} MiB"
        )
        store.close()
        return 0 if final["failed"] == 0 and lost == 0 else 1
    finally:
        server.close()
        tmp.cleanup()


def rotate_all(
    args: argparse.Namespace,
    ttl: float,
    soak: Soak,
    child: Child,
    monitor: Worker,
    store: SqliteStore,
    layout: Layout,
    path: Path,
) -> tuple[float, float]:
    """The rotations, a row every WINDOW; the memory of both processes after the first
    and the last. A dead client process or monitor stops them within a drain sample."""
    print(
        f"soak: {args.engine}, {args.rotations} rotations, client TTL {ttl:g}s; clients: "
        f"lambda x4, sqlalchemy x2{', psycopg_pool x2' if args.engine == 'postgresql' else ''}"
    )
    print(HEADER, flush=True)
    options = RotateOptions(client_ttl=ttl, quiet=ttl, drain_timeout=args.drain_timeout)

    def on_event(event: Event) -> None:
        child.check()
        monitor.check()
        if args.verbose:
            print(f"  {event}", flush=True)

    colors = {soak.users[0]: "blue", soak.users[1]: "green"}
    timeouts = 0
    window_start = time.monotonic()
    rss_first = 0.0
    report: dict[str, Any] = {"rss": rss_mib(child.pid)}
    for n in range(1, args.rotations + 1):
        while True:
            try:
                rotate(store, layout, admin_url=soak.admin, options=options, on_event=on_event)
                break
            except DrainTimeout:
                timeouts += 1  # resumable: the next call continues the drain
        child.send("report")
        report = child.recv(REPORT)
        if n == 1:
            rss_first = rss_mib(os.getpid()) + report["rss"]
        if n % WINDOW == 0 or n == args.rotations:
            now = time.monotonic()
            sessions = soak.sessions()
            peak = soak.samples.peak_since(window_start)
            window_start = now
            by_color = {colors[u]: c for u, c in sessions.items()}
            print(
                f"{n:>9} {now - soak.began:>7.0f}s {report['ok']:>8} {report['failed']:>6} "
                f"{by_color['blue']:>5} {by_color['green']:>5} {peak:>5} "
                f"{rss_mib(os.getpid()):>11.1f} {report['rss']:>11.1f} "
                f"{store_kib(path):>9.1f} {len(store.get(layout.state) or ''):>7} "
                f"{timeouts:>8}",
                flush=True,
            )
    return rss_first, rss_mib(os.getpid()) + report["rss"]


def count_lost(url: DbUrl, acks: list[tuple[str, int, int, list[int]]]) -> int:
    """Acknowledged rows that are not in the table (read with the active URL)."""
    conn = engine_class(url.scheme).client_connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT kind, worker, seq FROM soak")
        present = {(str(k), int(w), int(s)) for k, w, s in cur.fetchall()}
    finally:
        conn.close()
    lost = 0
    for kind, worker, last, unacked in acks:
        skip = set(unacked)
        lost += sum(
            (kind, worker, seq) not in present for seq in range(1, last + 1) if seq not in skip
        )
    return lost


def plot(soak: Soak, path: Path, began: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = soak.samples
    times = [(t - began) / 60 for t in samples.at]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    for color, series in (("blue", samples.blue), ("green", samples.green)):
        top.plot(times, list(series), label=color, color=color)
    top.set_ylabel("app sessions on the server")
    top.legend(loc="upper right")
    top.set_title(f"credflip soak on {soak.engine}: sessions per color and memory")
    bottom.plot(times, list(samples.rotator), label="rotator")
    bottom.plot(times, list(samples.clients), label="clients")
    bottom.set_ylabel("RSS (MiB)")
    bottom.set_xlabel("minutes")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["postgresql", "mysql"], required=True)
    parser.add_argument("--rotations", type=int, default=200)
    parser.add_argument("--client-ttl", default="1s")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--verbose", action="store_true", help="print every rotation event")
    parser.add_argument("--plot", help="write a PNG of sessions and memory here")
    args = parser.parse_args()
    try:
        sys.exit(run(args))
    except ChildDied as exc:
        sys.exit(f"soak: error: {exc}")


if __name__ == "__main__":
    main()
