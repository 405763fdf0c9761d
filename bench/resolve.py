"""Resolver micro-benchmark: cache hits, store calls per cold resolve, stampedes.

Side by side in one run, on a local SQLite store:

* ``credflip.resolve`` (cached, single flight);
* uncached: one multi-name store read per call (what credflip does when stale);
* the original reader: three single-name reads per call (pointer, writer, reader);
* a plain TTL cache without single flight (the pattern of most caching
  clients): how many store reads when N threads find it stale at once.

    python bench/resolve.py [--threads 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import credflip
from credflip.layout import Color, Layout
from credflip.resolver import Resolver, clear_cache
from credflip.stores.sqlite import SqliteStore

ENV = "prod"


class CountingStore(SqliteStore):
    """The real SQLite store, counting round trips."""

    calls = 0

    def _get_many(self, names: list[str]) -> dict[str, str]:
        self.calls += 1
        return super()._get_many(names)


def seed(store: SqliteStore) -> Layout:
    layout = Layout(ENV)
    for color in Color:
        for role in ("writer", "reader"):
            store.put(
                layout.url(color, role),  # type: ignore[arg-type]
                f"postgresql://app_{color}:pw@{role}.example:5432/app",
                secure=True,
            )
    store.put(layout.pointer, "blue")
    return layout


def timed(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median and p99 of *n* individually timed calls, in microseconds."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        call()
        samples.append(clock() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(n * 0.99)] / 1000


def three_call_reader(store: SqliteStore, layout: Layout) -> Callable[[], tuple[str, str, str]]:
    def read() -> tuple[str, str, str]:
        color = store.get(layout.pointer) or ""
        writer = store.get(f"{layout.base}/{color}/writer-db-url") or ""
        reader = store.get(f"{layout.base}/{color}/reader-db-url") or ""
        return color, writer, reader

    return read


class PlainTtlCache:
    """A TTL cache with no single flight: every thread that sees it stale reads."""

    def __init__(self, fetch: Callable[[], Any], ttl: float) -> None:
        self.fetch, self.ttl = fetch, ttl
        self.value: Any = None
        self.at = -1e9

    def get(self) -> Any:
        if time.monotonic() - self.at >= self.ttl:
            self.value = self.fetch()
            self.at = time.monotonic()
        return self.value


def stampede(call: Callable[[], Any], threads: int) -> None:
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        call()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = CountingStore(Path(tmp) / "params.db")
        layout = seed(store)
        clear_cache()
        rows = []

        # Cache hits through the public function, exactly as an application calls it.
        credflip.resolve(ENV, store=store)
        hit50, hit99 = timed(lambda: credflip.resolve(ENV, store=store), args.calls)
        rows.append(("credflip.resolve, cache hit", hit50, hit99))
        uncached = Resolver(store=store, ttl=0)
        un50, un99 = timed(lambda: uncached.resolve(ENV), args.calls // 50)
        rows.append(("uncached, 1 store read per call", un50, un99))
        reader = three_call_reader(store, layout)
        three50, three99 = timed(reader, args.calls // 50)
        rows.append(("original reader, 3 reads per call", three50, three99))

        print(f"{'per call':<36} {'median':>10} {'p99':>10}")
        for name, p50, p99 in rows:
            print(f"{name:<36} {p50:>8.2f}µs {p99:>8.2f}µs")

        print()
        store.calls = 0
        Resolver(store=store).resolve(ENV)
        credflip_cold = store.calls
        store.calls = 0
        reader()
        three_cold = store.calls
        print(f"{'store calls per cold resolve':<36} {'calls':>10}")
        print(f"{'credflip':<36} {credflip_cold:>10}")
        print(f"{'original reader':<36} {three_cold:>10}")

        print()
        store.calls = 0
        stale = Resolver(store=store, ttl=60)
        stampede(lambda: stale.resolve(ENV), args.threads)
        credflip_reads = store.calls
        store.calls = 0
        plain = PlainTtlCache(lambda: Resolver(store=store, ttl=0).resolve(ENV), ttl=60)
        stampede(plain.get, args.threads)
        plain_reads = store.calls
        print(f"{args.threads} threads, stale entry, at once  {'store reads':>10}")
        print(f"{'credflip (single flight)':<36} {credflip_reads:>10}")
        print(f"{'plain TTL cache':<36} {plain_reads:>10}")
        store.close()


if __name__ == "__main__":
    main()
