"""Rotations under load through PgBouncer, in transaction and in session pooling.

The colors' URLs go through a private PgBouncer (auth_query through a SECURITY
DEFINER lookup function) in front of a private PostgreSQL. Clients follow the
pointer with a 1 s TTL (the rotation's --client-ttl is 1.2 s); during the first
rotation a legacy client keeps blue's URL (one short connection per request) until
a few seconds after the switch.
Every request must succeed; each drain ends within the cache wait and its quiet
window (+2 s) once the legacy client is gone, not at PgBouncer's
``server_idle_timeout`` (600 s): the window asked for (10 s) without a legacy
client, longer after one when the drain's policy asks for it (a client that does
not follow); the first drain lasts until a window after the legacy client's last
request (it was seen); after each retire neither PgBouncer nor the server has a
connection of the old user left.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from apps import App, make_app
from clusters import PG_VERSIONS, Clusters
from faults import wait_for
from legacy_clients import Legacy
from poolers import Followers, PrivatePgbouncer

from credflip import commands
from credflip.layout import TTL_JITTER, Color, Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    PhaseFinished,
    RotateOptions,
    RotationResult,
    rotate,
)
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

#: The clients' TTL.
TTL = 1.0
#: The rotation's --client-ttl: the clients' plus one drain sample (0.2 s). A follower's
#: last request on the old color, at the very end of its cache, is seen at the next
#: sample; without the margin that sample may fall after the cache wait, and the
#: drain takes the follower for a client that does not follow (its window doubles).
ROTATION_TTL = TTL + 0.2
QUIET = 10.0
CACHE_WAIT = ROTATION_TTL * (1 + TTL_JITTER)
#: How late a drain may end after the rules allow it (sampling, the retire's start).
SLACK = 2.0
#: Requests the legacy client makes after the first switch before it leaves.
LEGACY_AFTER_SWITCH = 10


class TimedLegacy(Legacy):
    """A legacy client that notes when it was last served."""

    last = 0.0

    def served(self) -> None:
        self.last = time.monotonic()
        super().served()


class Timeline:
    """When each rotation switched and last finished draining (monotonic), and the quiet
    window its drain needed at the end."""

    def __init__(self) -> None:
        self.switched: list[float] = []
        self.drained: list[float] = []
        self.needed: list[float] = []
        #: The legacy clients each drain named.
        self.legacy: list[int] = []
        self._needed = 0.0
        self._legacy = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, DrainProgress):
            self._needed = event.status.needed_quiet
            self._legacy = event.legacy.count
        elif isinstance(event, PhaseFinished):
            if event.phase.value == "switch":
                self.switched.append(time.monotonic())
            elif event.phase.value == "drain":
                # A retire that finds the old user in use after its lock goes back to the
                # drain (safe): the rotation's drain ends when its last one does.
                if len(self.drained) == len(self.switched):
                    del self.drained[-1], self.needed[-1], self.legacy[-1]
                self.drained.append(time.monotonic())
                self.needed.append(self._needed)
                self.legacy.append(self._legacy)


@pytest.fixture(params=["transaction", "session"])
def behind(
    request: pytest.FixtureRequest, clusters: Clusters
) -> Iterator[tuple[App, PrivatePgbouncer]]:
    """An app on the suite's first PostgreSQL and a PgBouncer in front of it."""
    cluster = clusters.get(PG_VERSIONS[0])
    app = make_app(cluster)
    with PrivatePgbouncer(cluster, request.param) as pgb:
        pgb.serve(app.database)
        yield app, pgb


def old_user_left(app: App, pgb: PrivatePgbouncer, user: str) -> tuple[list[object], list[object]]:
    """What PgBouncer and the server still have of *user*."""
    with app.su() as conn:
        rows = conn.execute(
            "SELECT pid, client_port, state FROM pg_stat_activity WHERE usename = %s", [user]
        ).fetchall()
    return [(s["remote_pid"], s["state"]) for s in pgb.servers_of(user)], list(rows)


def test_three_rotations_under_load_through_pgbouncer(
    behind: tuple[App, PrivatePgbouncer], sqlite_store: SqliteStore, layout: Layout
) -> None:
    app, pgb = behind
    store = sqlite_store
    blue = pgb.url(app.user, app.password, app.database)
    commands.init(
        store, layout, admin_url=app.admin_url, writer_url=blue, pooler_url=pgb.console_url()
    )
    timeline = Timeline()
    options = RotateOptions(client_ttl=ROTATION_TTL, quiet=QUIET, drain_timeout=120)

    def rotation() -> RotationResult:
        return rotate(store, layout, admin_url=app.admin_url, options=options, on_event=timeline)

    passwords = {app.password}
    legacy = TimedLegacy(app, blue, period=0.3)
    results = []
    with Followers(store, layout, TTL) as followers, ThreadPoolExecutor(1) as pool:
        with legacy:
            first = pool.submit(rotation)
            wait_for(lambda: timeline.switched, timeout=60, what="the first switch")
            after = legacy.ok
            wait_for(lambda: legacy.ok >= after + LEGACY_AFTER_SWITCH, what="legacy requests")
        gone = time.monotonic()
        for n in range(3):
            results.append(first.result(timeout=180) if n == 0 else rotation())
            old = app.user if n % 2 == 0 else app.green
            assert old_user_left(app, pgb, old) == ([], []), f"rotation {n + 1}"
            for color in Color:
                url = DbUrl.parse(store.get(layout.url(color, "writer")) or "")
                passwords.add(url.password or "")
    assert followers.failed == [] and legacy.errors == []
    assert followers.users[app.user] and followers.users[app.green]
    assert all(r.finished for r in results)
    assert len(timeline.switched) == len(timeline.drained) == 3
    # Without a legacy client the window is the one asked for; once the drain saw one
    # after the cache wait its policy may ask for more (drain/policy.py), and that is
    # the window the first drain is held to.
    assert timeline.needed[1:] == [QUIET, QUIET]
    # The followers' last requests as the old user, just before their caches expired,
    # name no legacy client; the one legacy client is named in the first drain.
    assert timeline.legacy[1:] == [0, 0] and timeline.legacy[0] >= 1, timeline.legacy
    assert timeline.needed[0] >= QUIET
    for n, (switched, drained) in enumerate(zip(timeline.switched, timeline.drained, strict=True)):
        free = max(switched + CACHE_WAIT, gone if n == 0 else 0.0)
        assert drained - free <= timeline.needed[n] + SLACK, (
            f"rotation {n + 1}: drained {drained - free:.1f}s after the old user was free "
            f"(drain {results[n].drain_seconds:.1f}s, window {timeline.needed[n]:.1f}s)"
        )
    # The legacy client was seen to its last request: the window began after it.
    assert timeline.drained[0] >= legacy.last + timeline.needed[0] - 0.2
    for text in (pgb.log(), app.server_log()):
        assert not [p for p in passwords if p and p in text]
