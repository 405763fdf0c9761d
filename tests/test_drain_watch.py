"""The drain's I/O shell (rotation/watch.py) on a fake clock and a fake fleet: when a
sample is stamped, how long a command-line run lasts, and the retire's last look.

No database: the fleet answers from a function of the fake clock, and reading it
takes as long as the test says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from credflip.drain import DrainPolicy, Evidence, Reading
from credflip.drain.evidence import UNCOUNTED, digest
from credflip.engines import SessionGroup, Sessions
from credflip.errors import DrainTimeout, UsedAtRetire
from credflip.layout import Color, Layout
from credflip.rotation import DrainProgress, RotateOptions
from credflip.rotation import watch as watch_module
from credflip.rotation.context import Context
from credflip.state import Phase, Rotation, State
from credflip.stores.sqlite import SqliteStore

WALL = 1_700_000_000.0  # the fake wall clock at monotonic 0
PRIMARY = "db-1:5432"


@dataclass
class Clock:
    """Monotonic time that moves only when the drain sleeps or reads."""

    t: float = 0.0
    #: Past this, the run has gone on too long: the test fails instead of looping.
    limit: float = float("inf")

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        assert self.t <= self.limit, f"the run went on to {self.t:.0f}s"


@dataclass
class Observer:
    clock: Clock

    def position(self) -> str | None:
        return None

    def server_time(self) -> float:
        return WALL + self.clock.t


@dataclass
class FakeFleet:
    """Every instance read in turn: *make(t)* is what they show when the read begins,
    and the read takes *read_seconds*."""

    clock: Clock
    make: Callable[[float], list[Reading]]
    read_seconds: float = 0.0
    reads: list[tuple[float, bool]] = field(default_factory=list)
    pooler: Any = None

    @property
    def primary(self) -> Observer:
        return Observer(self.clock)

    @property
    def instances(self) -> list[Any]:
        return [SimpleNamespace(address=PRIMARY)]

    def read(self, user: str, *, counting: bool, position: str | None) -> list[Reading]:
        began = self.clock.t
        self.reads.append((began, counting))
        self.clock.t += self.read_seconds
        readings = self.make(began)
        return [r if counting else dataclasses.replace(r, counters={}) for r in readings]

    def signals(self) -> list[Any]:
        return []

    def counter_gaps(self, user: str, group: str | None, *, statements: bool = False) -> list[str]:
        return []


def counted(value: int = 3) -> list[Reading]:
    return [Reading(PRIMARY, Sessions(), {"logins": value})]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(
        watch_module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep)
    )
    # The primary's clock minus this machine's: the fake wall clock, read once.
    monkeypatch.setattr(Context, "wall", lambda self: WALL + fake.t)
    return fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    st = SqliteStore(tmp_path / "params.db")
    yield st
    st.close()


def context(
    store: SqliteStore,
    fleet: FakeFleet,
    options: RotateOptions,
    *,
    switched: float,
    evidence: Evidence | None = None,
    events: list[Any] | None = None,
) -> Context:
    """A rotation of blue (app_blue) to green, switched at monotonic *switched*."""
    rot = Rotation(
        "r1",
        Color.BLUE,
        Color.GREEN,
        Phase.DRAIN,
        WALL + switched,
        switched_at=WALL + switched,
        client_ttl=options.client_ttl,
        quiet=options.quiet,
        evidence={} if evidence is None else evidence.to_dict(),
    )
    state = State("postgresql", {Color.BLUE: "app_blue", Color.GREEN: "app_green"}, current=rot)
    sink = events if events is not None else []
    return Context(store, Layout("watch"), fleet, state, options, sink.append)  # type: ignore[arg-type]


# -- B: a sample's instant is when its read began -----------------------------------------


def test_each_sample_is_stamped_when_its_read_began(clock: Clock, store: SqliteStore) -> None:
    """Reading every instance takes 2 s: the quiet a sample shows is known only up to the
    start of its read, so that is its instant (not 2 s later)."""
    fleet = FakeFleet(clock, lambda t: counted(), read_seconds=2.0)
    events: list[Any] = []
    options = RotateOptions(client_ttl=1.0, quiet=10.0)
    ctx = context(store, fleet, options, switched=0.0, events=events)
    assert watch_module.watch(ctx, counting=True)
    waited = [e.status.waited for e in events if isinstance(e, DrainProgress)]
    assert waited == pytest.approx([began for began, _ in fleet.reads])
    # Done at the first sample whose read began 10 s into the quiet (which began with
    # the first sample read after the cache wait at 1.1 s: the one read from 2.2 s).
    assert ctx.rot.drain_seconds == pytest.approx(fleet.reads[-1][0])
    assert fleet.reads[-1][0] >= 2.2 + 10.0 > fleet.reads[-2][0]


# -- D: a command-line run ends at its drain timeout --------------------------------------


def stretched_evidence(now: float) -> Evidence:
    """A job every 10 minutes seen 3 times, its pauses a second apart: taken for a random
    client, the window is about 14.6 h; quiet since *now*."""
    return Evidence(
        user="app_blue",
        counters={PRIMARY: digest((("logins", digest(3)),))},
        quiet_since=WALL + now,
        longest_gap=601.0,
        pauses=2,
        pause_sum=1201.0,
        pause_min=600.0,
        sampled_at=WALL + now,
    )


def test_a_resumed_command_line_run_stops_at_its_drain_timeout(
    clock: Clock, store: SqliteStore
) -> None:
    """Resumed past the timeout with a window the pauses stretched to 14.6 h: the run
    samples for its drain timeout (the shortest drain + 15 min) or, longer, the cache
    wait and two windows (what the options alone can ask for: 81 min), then stops
    (exit 4, resumable); the window carries over in the evidence. It used to sit in
    the run until the whole window was over."""
    options = RotateOptions(client_ttl=60.0)
    policy = DrainPolicy(client_ttl=60.0)
    evidence = stretched_evidence(now=-600.0)
    assert evidence.needed_quiet(policy) == pytest.approx(14.6 * 3600, rel=0.01)
    bound = max(policy.default_timeout, 66.0 + 2 * 2400.0)  # 56 min, 81 min
    clock.limit = bound + 60.0
    fleet = FakeFleet(clock, lambda t: counted(), read_seconds=1.0)
    ctx = context(store, fleet, options, switched=-7200.0, evidence=evidence)
    with pytest.raises(DrainTimeout) as stopped:
        watch_module.watch(ctx, counting=True)
    assert bound <= clock.t <= bound + 2.5  # a sample and a read: 1.2 s, then 1 s
    text = str(stopped.value)
    assert "shows no use, but the quiet window or --min-drain needs" in text, text
    assert f"run 'credflip rotate --env {ctx.layout.env}' again later" in text
    kept = Evidence.from_dict(ctx.rot.evidence)
    assert kept.quiet_since == pytest.approx(WALL - 600.0)  # the window goes on


def test_a_run_whose_drain_timeout_is_shorter_than_the_window_can_finish_it(
    clock: Clock, store: SqliteStore
) -> None:
    """--quiet 3s --drain-timeout 2s, resumed past the timeout once a legacy client left
    (two windows until two of its pauses are known): the run lasts the cache wait and
    two windows as the options set them, so it finishes."""
    options = RotateOptions(client_ttl=0.3, quiet=3.0, drain_timeout=2.0)
    clock.limit = 0.33 + 6.0
    fleet = FakeFleet(clock, lambda t: counted())
    # The counters moved since the last run: the window starts in this one.
    seen = Evidence(user="app_blue", counters={PRIMARY: "moved"}, legacy=True)
    ctx = context(store, fleet, options, switched=-100.0, evidence=seen)
    assert watch_module.watch(ctx, counting=True)
    assert 6.0 <= clock.t <= 6.0 + 2 * options.sample_interval  # the first sample saw the use


# -- B: the retire's last look ------------------------------------------------------------


def drained(clock: Clock, store: SqliteStore, fleet: FakeFleet, options: RotateOptions) -> Context:
    """A drain that just finished (DONE), as the retire finds it."""
    ctx = context(store, fleet, options, switched=0.0)
    assert watch_module.watch(ctx, counting=True)
    return ctx


def test_the_last_look_lets_a_quiet_old_user_be_retired(clock: Clock, store: SqliteStore) -> None:
    fleet = FakeFleet(clock, lambda t: counted())
    ctx = drained(clock, store, fleet, RotateOptions(client_ttl=1.0, quiet=5.0))
    clock.t += 3.0  # the boundary written, the checks, the plan
    kept = dict(ctx.rot.evidence)
    watch_module.last_look(ctx)
    assert fleet.reads[-1] == (clock.t, True)
    assert ctx.rot.evidence == kept


@pytest.mark.parametrize("what", ["a counter moved", "a session", "unreachable"])
def test_the_last_look_sends_a_used_old_user_back_to_the_drain(
    clock: Clock, store: SqliteStore, what: str
) -> None:
    late: dict[str, float] = {}

    def make(t: float) -> list[Reading]:
        if "at" not in late or t < late["at"]:
            return counted()
        if what == "a counter moved":
            return counted(4)
        if what == "a session":
            one = Sessions((SessionGroup("10.0.0.5", "cron", 1),))
            return [Reading(PRIMARY, one, {"logins": 3})]
        return [Reading(PRIMARY, error="connection refused")]

    fleet = FakeFleet(clock, make)
    ctx = drained(clock, store, fleet, RotateOptions(client_ttl=1.0, quiet=5.0))
    late["at"] = clock.t + 1.0  # a legacy client, after the drain's last sample
    clock.t += 3.0
    with pytest.raises(UsedAtRetire) as seen:
        watch_module.last_look(ctx)
    assert str(seen.value).startswith("not retiring 'app_blue': one last reading right before")
    assert "the drain goes on" in str(seen.value)
    # What it saw is the drain's evidence now: the window starts over.
    assert Evidence.from_dict(ctx.rot.evidence).quiet_since is None


def test_the_last_look_reads_counters_only_where_the_drain_did(
    clock: Clock, store: SqliteStore
) -> None:
    """A drain on open sessions alone (no counter told the old user apart, the risk
    accepted) kept UNCOUNTED: the last look reads the same way, and it is quiet."""
    fleet = FakeFleet(clock, lambda t: counted())
    options = RotateOptions(client_ttl=1.0, quiet=5.0, sessions_only=True)
    ctx = context(store, fleet, options, switched=0.0)
    assert watch_module.watch(ctx, counting=False)
    assert set(Evidence.from_dict(ctx.rot.evidence).counters.values()) == {UNCOUNTED}
    watch_module.last_look(ctx)
    assert fleet.reads[-1][1] is False
