"""The cached resolver applications use."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import SECRET, Clock, seed, waiting_on_the_read

from credflip import Endpoints, Resolver
from credflip.errors import NotInitialized, StoreError
from credflip.layout import Color, Layout
from credflip.stores.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """A real SQLite store that counts reads and can be told to fail or wait."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0
        self.fail = False
        self.gate: threading.Event | None = None

    def _get_many(self, names: list[str]) -> dict[str, str]:
        self.reads += 1
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail:
            raise StoreError("store unavailable (test)")
        return super()._get_many(names)


@pytest.fixture
def cstore(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "p.db")


def test_one_read_per_cold_resolve_and_cache_hits(cstore: CountingStore) -> None:
    seed(cstore)
    clock = Clock()
    resolver = Resolver(store=cstore, ttl=60, clock=clock)
    first = resolver.resolve("prod")
    assert (first.color, first.user) == (Color.BLUE, "app_blue")
    assert first.writer_url == f"postgresql://app_blue:{SECRET}@writer.db/app"
    assert first.reader_url.endswith("@reader.db/app")
    assert cstore.reads == 1
    for _ in range(100):
        assert resolver.resolve("prod") is first
    assert cstore.reads == 1
    clock.now += 66.1  # past the longest jittered TTL
    cstore.put(Layout("prod").pointer, "green")
    assert resolver.resolve("prod").color is Color.GREEN
    assert cstore.reads == 2


def all_at_once(
    store: CountingStore, threads: int, call: Callable[[], Endpoints]
) -> list[Endpoints]:
    """Run *threads* calls while the store holds the first read open until all are waiting."""
    store.gate = threading.Event()
    results: list[Endpoints] = []
    pool = [threading.Thread(target=lambda: results.append(call())) for _ in range(threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + 30
    while not waiting_on_the_read(pool):  # a condition, polled; not a timed guess
        assert time.monotonic() < deadline, "threads never reached the resolver"
        time.sleep(0.001)
    store.gate.set()
    for t in pool:
        t.join(30)
    return results


def test_single_flight_fifty_threads(cstore: CountingStore) -> None:
    seed(cstore)
    resolver = Resolver(store=cstore, ttl=60)
    results = all_at_once(cstore, 50, lambda: resolver.resolve("prod"))
    assert len(results) == 50 and len({id(r) for r in results}) == 1
    assert cstore.reads == 1


def test_refresh_is_coalesced_too(cstore: CountingStore) -> None:
    seed(cstore)
    resolver = Resolver(store=cstore, ttl=60)
    resolver.resolve("prod")
    done = all_at_once(cstore, 20, lambda: resolver.refresh("prod"))
    assert len(done) == 20
    # One read to warm up, one for all twenty refreshes.
    assert cstore.reads == 2


def test_stale_if_error_with_backoff(
    cstore: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    seed(cstore)
    clock = Clock()
    resolver = Resolver(store=cstore, ttl=10, clock=clock, backoff=1.0, max_backoff=8.0)
    good = resolver.resolve("prod")
    cstore.fail = True
    clock.now += 12
    with caplog.at_level(logging.WARNING, logger="credflip.resolver"):
        assert resolver.resolve("prod") is good
    assert cstore.reads == 2
    assert "serving the blue value" in caplog.text and SECRET not in caplog.text
    # Backing off: no new read until the delay passed.
    assert resolver.resolve("prod") is good and cstore.reads == 2
    clock.now += 1.01
    assert resolver.resolve("prod") is good and cstore.reads == 3
    clock.now += 1.01  # backoff doubled to 2s
    assert resolver.resolve("prod") is good and cstore.reads == 3
    clock.now += 1.0
    assert resolver.resolve("prod") is good and cstore.reads == 4
    cstore.fail = False
    clock.now += 4.01
    cstore.put(Layout("prod").pointer, "green")
    assert resolver.resolve("prod").color is Color.GREEN and cstore.reads == 5


def test_error_when_nothing_was_ever_read(cstore: CountingStore) -> None:
    seed(cstore)
    cstore.fail = True
    with pytest.raises(StoreError):
        Resolver(store=cstore).resolve("prod")
    with pytest.raises(NotInitialized, match="credflip init --env other"):
        Resolver(store=SqliteStore(cstore.path)).resolve("other")


def test_jitter_spreads_expiry_within_ten_percent(cstore: CountingStore) -> None:
    envs = [f"e{i}" for i in range(60)]
    for env in envs:
        seed(cstore, env)
    resolver = Resolver(store=cstore, ttl=100)
    for env in envs:
        resolver.resolve(env)
    factors = [resolver._entries[e].factor for e in envs]
    assert all(0.9 <= f <= 1.1 for f in factors)
    assert max(factors) - min(factors) > 0.05


def test_repr_masks_passwords(cstore: CountingStore) -> None:
    seed(cstore)
    endpoints = Resolver(store=cstore).resolve("prod")
    assert SECRET not in repr(endpoints) and SECRET not in str(endpoints.to_dict())
    assert SECRET in endpoints.to_dict(show_secrets=True)["writer_url"]


def test_module_level_resolve_uses_env_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import credflip
    from credflip.resolver import clear_cache

    clear_cache()
    store = SqliteStore(tmp_path / "p.db")
    seed(store, "stage", Color.GREEN)
    monkeypatch.setenv("CREDFLIP_STORE", store.url)
    monkeypatch.setenv("CREDFLIP_TTL", "30")
    assert credflip.resolve("stage").color is Color.GREEN
    store.put(Layout("stage").pointer, "blue")
    assert credflip.resolve("stage").color is Color.GREEN  # cached
    assert credflip.refresh("stage").color is Color.BLUE
    assert credflip.resolve("stage").color is Color.BLUE
    clear_cache()


def test_import_loads_no_driver_or_sdk() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import credflip"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()[1:]}
    assert "credflip" in modules
    assert not modules & {
        "boto3",
        "botocore",
        "psycopg",
        "pymysql",
        "sqlalchemy",
        "psycopg_pool",
        "click",
        "rich",
    }


def test_a_long_outage_keeps_serving_the_last_value(cstore: CountingStore) -> None:
    """Hours of failed reads (2000 at the 8 s cap): the backoff must not overflow."""
    seed(cstore)
    clock = Clock()
    resolver = Resolver(store=cstore, ttl=10, clock=clock, backoff=1.0, max_backoff=8.0)
    good = resolver.resolve("prod")
    cstore.fail = True
    for _ in range(2000):
        clock.now += 8.01
        assert resolver.resolve("prod") is good
    assert cstore.reads == 2000  # the first step was still within the TTL
