"""The soak's client process: every client kind that follows the pointer, under load.

It runs in a process of its own (``bench/soak.py`` starts it with
:class:`children.Child`), so that its memory is the clients' own, and answers
the rotator's ``report`` and ``stop`` on its pipe. A worker that crashes ends
it, and the rotator hears why at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from credflip.demo import Traffic
from credflip.engines import engine_class
from credflip.resolver import Endpoints, Resolver
from credflip.retry import call_with_refresh
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

ENV = "soak"


def rss_mib(pid: int) -> float:
    """Resident memory of *pid* now (not its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


def lambda_request(resolver: Resolver, acks: Acks) -> Callable[[int], str]:
    """Resolve per request (a warm Lambda's cache) and open a fresh connection."""

    def request(worker: int) -> str:
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

    return request


def sqlalchemy_request(sa: Any, acks: Acks) -> Callable[[int], str]:
    """One transaction on the credflip.sqlalchemy engine *sa*."""
    import sqlalchemy

    statement = sqlalchemy.text("INSERT INTO soak (kind, worker, seq) VALUES (:k, :w, :s)")

    def request(worker: int) -> str:
        seq = acks.attempt("sqlalchemy", worker)
        with sa.begin() as conn:
            conn.execute(statement, {"k": "sqlalchemy", "w": worker, "s": seq})
            user = str(conn.execute(sqlalchemy.text("SELECT current_user")).scalar())
        acks.ack("sqlalchemy", worker, seq)
        return user

    return request


def pool_request(pool: Any, acks: Acks) -> Callable[[int], str]:
    """One transaction on a connection of the credflip.psycopg pool *pool*."""

    def request(worker: int) -> str:
        seq = acks.attempt("pool", worker)
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO soak (kind, worker, seq) VALUES (%s, %s, %s)",
                ("pool", worker, seq),
            )
            row = conn.execute("SELECT current_user").fetchone()
        acks.ack("pool", worker, seq)
        return str(row[0]) if row else "?"

    return request


def client_traffic(
    engine: str, resolver: Resolver, acks: Acks, stack: contextlib.ExitStack
) -> dict[str, Traffic]:
    """Every client kind's traffic (not started); *stack* closes their pools."""
    from credflip.psycopg import connection_pool
    from credflip.sqlalchemy import create_engine

    named = engine == "postgresql"  # application_name shows each kind on the server
    sa = create_engine(
        ENV,
        resolver=resolver,
        pool_size=2,
        max_overflow=0,
        connect_args={"application_name": "sqlalchemy"} if named else {},
    )
    stack.callback(sa.dispose)
    traffic = {
        "lambda": Traffic(lambda_request(resolver, acks), workers=4, pause=0.05),
        "sqlalchemy": Traffic(sqlalchemy_request(sa, acks), workers=2, pause=0.02),
    }
    if engine == "postgresql":
        pool = connection_pool(
            ENV, resolver=resolver, min_size=2, max_size=2, kwargs={"application_name": "pool"}
        )
        stack.callback(pool.close)
        traffic["pool"] = Traffic(pool_request(pool, acks), workers=2, pause=0.02)
    return traffic


def traffic_report(traffic: dict[str, Traffic]) -> dict[str, Any]:
    """Requests ok and failed so far, errors by type, and this process's memory."""
    errors: Counter[str] = Counter()
    for t in traffic.values():
        errors.update(t.errors)
    return {
        "ok": sum(t.snapshot()[0] for t in traffic.values()),
        "failed": sum(t.snapshot()[1] for t in traffic.values()),
        "errors": dict(errors),
        "rss": rss_mib(os.getpid()),
    }


def next_command(pipe: Connection, traffic: dict[str, Traffic]) -> Any:
    """The parent's next command; a worker that crashed meanwhile raises here at once."""
    while not pipe.poll(0.2):
        for t in traffic.values():
            t.check()
    return pipe.recv()


def clients(engine: str, store_path: str, ttl: float, pipe: Connection) -> None:
    """Run every client kind until told to stop; answer reports on *pipe*.

    Runs in the child process (:class:`children.Child`): an error here, or a
    crashed worker, ends it and reaches the parent with its message.
    """
    resolver = Resolver(store=SqliteStore(store_path, create=False), ttl=ttl)
    acks = Acks()
    with contextlib.ExitStack() as stack:
        traffic = client_traffic(engine, resolver, acks, stack)
        for t in traffic.values():
            t.start()
        pipe.send(traffic_report(traffic))
        while next_command(pipe, traffic) != "stop":
            pipe.send(traffic_report(traffic))
        for t in traffic.values():
            t.stop()
    final = traffic_report(traffic)
    final["acks"] = acks.export()
    pipe.send(final)
