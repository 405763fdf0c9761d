"""Back-to-back rotations under continuous mixed load: nothing fails, nothing is lost.

One private server (PostgreSQL: the embedded one, scram-sha-256,
pg_stat_statements; MySQL: the machine's MariaDB at 127.0.0.1:3306 with
``userstat`` on), one app and one env, N rotations in a row with client TTL
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
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from drain_detection import Mariadb, Postgres

from credflip import commands
from credflip.demo import Traffic
from credflip.durations import parse_duration
from credflip.engines import engine_class
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.resolver import Endpoints, Resolver
from credflip.retry import call_with_refresh
from credflip.rotation import Event, RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

ENV = "soak"
WINDOW = 10
TABLE = (
    "CREATE TABLE soak (kind varchar(16), worker int, seq bigint, PRIMARY KEY (kind, worker, seq))"
)


def rss_mib(pid: int) -> float:
    """Resident memory of *pid* now (not its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the client process -------------------------------------------------------


class Acks:
    """Acknowledged rows in constant memory: per (kind, worker) the last seq tried and
    the seqs that were not acknowledged (few), so the clients' RSS is credflip's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[tuple[str, int], int] = {}
        self.unacked: dict[tuple[str, int], set[int]] = {}

    def attempt(self, kind: str, worker: int) -> int:
        with self.lock:
            seq = self.last[kind, worker] = self.last.get((kind, worker), 0) + 1
            self.unacked.setdefault((kind, worker), set()).add(seq)
            return seq

    def ack(self, kind: str, worker: int, seq: int) -> None:
        with self.lock:
            self.unacked[kind, worker].discard(seq)

    def export(self) -> list[tuple[str, int, int, list[int]]]:
        with self.lock:
            return [(k, w, last, sorted(self.unacked[k, w])) for (k, w), last in self.last.items()]


def clients(engine: str, store_path: str, ttl: float, pipe: Connection) -> None:
    """Run every client kind until told to stop; answer reports on *pipe*."""
    import sqlalchemy

    from credflip.psycopg import connection_pool
    from credflip.sqlalchemy import create_engine

    resolver = Resolver(store=SqliteStore(store_path, create=False), ttl=ttl)
    acks = Acks()

    def lambda_request(worker: int) -> str:
        seq = acks.attempt("lambda", worker)

        def work(endpoints: Endpoints) -> str:
            url = DbUrl.parse(endpoints.writer_url)
            conn = engine_class(url.scheme).client_connect(url)
            try:
                cur = conn.cursor()
                cur.execute(
                    "INSERT INTO soak (kind, worker, seq) VALUES (%s, %s, %s)",
                    ("lambda", worker, seq),
                )
                conn.commit()
            finally:
                conn.close()
            return url.user

        user = call_with_refresh(ENV, work, resolver=resolver)
        acks.ack("lambda", worker, seq)
        return user

    named = engine == "postgresql"  # application_name shows each kind on the server
    sa = create_engine(
        ENV,
        resolver=resolver,
        pool_size=2,
        max_overflow=0,
        connect_args={"application_name": "sqlalchemy"} if named else {},
    )
    statement = sqlalchemy.text("INSERT INTO soak (kind, worker, seq) VALUES (:k, :w, :s)")

    def sqlalchemy_request(worker: int) -> str:
        seq = acks.attempt("sqlalchemy", worker)
        with sa.begin() as conn:
            conn.execute(statement, {"k": "sqlalchemy", "w": worker, "s": seq})
            user = str(conn.execute(sqlalchemy.text("SELECT current_user")).scalar())
        acks.ack("sqlalchemy", worker, seq)
        return user

    traffic = {
        "lambda": Traffic(lambda_request, workers=4, pause=0.05),
        "sqlalchemy": Traffic(sqlalchemy_request, workers=2, pause=0.02),
    }
    pool = None
    if engine == "postgresql":
        pool = connection_pool(
            ENV, resolver=resolver, min_size=2, max_size=2, kwargs={"application_name": "pool"}
        )

        def pool_request(worker: int) -> str:
            seq = acks.attempt("pool", worker)
            assert pool is not None
            with pool.connection() as conn:
                conn.execute(
                    "INSERT INTO soak (kind, worker, seq) VALUES (%s, %s, %s)",
                    ("pool", worker, seq),
                )
                row = conn.execute("SELECT current_user").fetchone()
            acks.ack("pool", worker, seq)
            return str(row[0]) if row else "?"

        traffic["pool"] = Traffic(pool_request, workers=2, pause=0.02)
    for t in traffic.values():
        t.start()

    def report() -> dict[str, Any]:
        errors: Counter[str] = Counter()
        for t in traffic.values():
            errors.update(t.errors)
        return {
            "ok": sum(t.snapshot()[0] for t in traffic.values()),
            "failed": sum(t.snapshot()[1] for t in traffic.values()),
            "errors": dict(errors),
            "rss": rss_mib(os.getpid()),
        }

    pipe.send(report())
    while True:
        command = pipe.recv()
        if command == "stop":
            break
        pipe.send(report())
    for t in traffic.values():
        t.stop()
    if pool is not None:
        pool.close()
    sa.dispose()
    final = report()
    final["acks"] = acks.export()
    pipe.send(final)


# -- the rotator --------------------------------------------------------------


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


def run(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.client_ttl, what="--client-ttl")
    server = Postgres() if args.engine == "postgresql" else Mariadb(prefix="cfs")
    tmp = tempfile.TemporaryDirectory()
    try:
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
        colors = {app.user: "blue", f"{app.user}_green": "green"}

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=clients, args=(args.engine, str(path), ttl, child))
        proc.start()
        soak.child_pid = proc.pid or 0
        first = parent.recv()
        if first["failed"]:
            print(f"clients failed before any rotation: {first['errors']}", file=sys.stderr)
        monitor = threading.Thread(target=soak.monitor, daemon=True)
        monitor.start()

        began = time.monotonic()
        print(
            f"soak: {args.engine}, {args.rotations} rotations, client TTL {ttl:g}s; clients: "
            f"lambda x4, sqlalchemy x2{', psycopg_pool x2' if args.engine == 'postgresql' else ''}"
        )
        header = (
            f"{'rotations':>9} {'elapsed':>8} {'ok':>8} {'failed':>6} {'blue':>5} {'green':>5} "
            f"{'peak':>5} {'rotator MiB':>11} {'clients MiB':>11} {'store KiB':>9} {'state B':>7} "
            f"{'timeouts':>8}"
        )
        print(header, flush=True)
        options = RotateOptions(client_ttl=ttl, drain_timeout=args.drain_timeout)

        def on_event(event: Event) -> None:
            if args.verbose:
                print(f"  {event}", flush=True)

        timeouts = 0
        window_start = time.monotonic()
        rss_first = 0.0
        report: dict[str, Any] = first
        for n in range(1, args.rotations + 1):
            while True:
                try:
                    rotate(store, layout, admin_url=admin, options=options, on_event=on_event)
                    break
                except DrainTimeout:
                    timeouts += 1  # resumable: the next call continues the drain
            parent.send("report")
            report = parent.recv()
            total_rss = rss_mib(os.getpid()) + report["rss"]
            if n == 1:
                rss_first = total_rss
            if n % WINDOW == 0 or n == args.rotations:
                now = time.monotonic()
                sessions = soak.sessions()
                peak = soak.samples.peak_since(window_start)
                window_start = now
                by_color = {colors[u]: c for u, c in sessions.items()}
                print(
                    f"{n:>9} {now - began:>7.0f}s {report['ok']:>8} {report['failed']:>6} "
                    f"{by_color['blue']:>5} {by_color['green']:>5} {peak:>5} "
                    f"{rss_mib(os.getpid()):>11.1f} {report['rss']:>11.1f} "
                    f"{store_kib(path):>9.1f} {len(store.get(layout.state) or ''):>7} "
                    f"{timeouts:>8}",
                    flush=True,
                )
        rss_last = rss_mib(os.getpid()) + report["rss"]
        parent.send("stop")
        final = parent.recv()
        proc.join(30)
        soak.stop.set()
        monitor.join()
        lost = count_lost(DbUrl.parse(Resolver(store=store).refresh(ENV).writer_url), final["acks"])
        if final["errors"]:
            print(f"client errors: {final['errors']}")
        if args.plot:
            plot(soak, Path(args.plot), began)
            print(f"plot: {args.plot}")
        print(
            f"soak: {args.rotations} rotations, {final['ok'] + final['failed']} requests, "
            f"{final['failed']} failed, {lost} lost, rss {rss_first:.0f}→{rss_last:.0f} MiB"
        )
        store.close()
        return 0 if final["failed"] == 0 and lost == 0 else 1
    finally:
        server.close()
        tmp.cleanup()


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
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
