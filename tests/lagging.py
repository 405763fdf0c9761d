"""Rotations over a replica that replays late (a PostgreSQL standby with
``recovery_min_apply_delay``, a MariaDB replica with ``MASTER_DELAY``): readers that
follow the pointer meanwhile, and the run after verify gave up waiting for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helpers import assert_pointer_connects, on, stored_url

from credflip import commands
from credflip.demo import Traffic
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import Event, RotateOptions, RotationResult, rotate
from credflip.state import Phase, load_state
from credflip.stores.base import Store


def adopt_reading_on(app: Any, store: Store, layout: Layout, port: int) -> None:
    """Start managing *app*'s env, its reader URL on the replica serving on *port*."""
    commands.init(
        store, layout, admin_url=app.admin_url, writer_url=app.url, reader_url=on(app.url, port)
    )


def rotate_while_reading(
    app: Any,
    store: Store,
    layout: Layout,
    options: RotateOptions,
    *,
    times: int,
    watch: Callable[[Event], None] | None = None,
) -> tuple[list[RotationResult], list[Event], Traffic]:
    """Rotate *times* while three threads read through the reader URL the pointer names
    (cached 0.3 s, as a client would); returns the results, the events and the reads.
    *watch* sees each event as it comes."""
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=0.3)

    def read(_worker: int) -> str:
        endpoints = resolver.resolve(layout.env)
        app.execute(endpoints.reader_url, "SELECT count(*) FROM orders")
        return endpoints.color.value

    traffic = Traffic(read, workers=3, pause=0.01)
    events: list[Event] = []

    def seen(event: Event) -> None:
        events.append(event)
        if watch is not None:
            watch(event)

    results = []
    traffic.start()
    try:
        for _ in range(times):
            result = rotate(store, layout, admin_url=app.admin_url, options=options, on_event=seen)
            results.append(result)
    finally:
        traffic.stop()
    return results, events, traffic


def assert_resumes_verify_with_the_same_password(
    app: Any, store: Store, layout: Layout, options: RotateOptions
) -> RotationResult:
    """A first rotation (blue to green) stopped in verify: the pointer still names blue and
    connects; the next run finishes with the password verify was waiting for."""
    state = load_state(store, layout)
    assert state.current is not None and state.current.phase is Phase.VERIFY
    password = stored_url(store, layout, Color.GREEN).password
    assert assert_pointer_connects(store, layout) is Color.BLUE
    result = rotate(store, layout, admin_url=app.admin_url, options=options)
    assert result.finished and result.resumed
    # No new password was set on resume: the one already replicating was kept.
    assert stored_url(store, layout, Color.GREEN).password == password
    assert assert_pointer_connects(store, layout) is Color.GREEN
    return result
