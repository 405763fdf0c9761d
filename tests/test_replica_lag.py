"""Verify on a MariaDB replica that applies every event late (``MASTER_DELAY``).

MariaDB reports no replay position credflip could wait for, so verify logs in
on the replica and retries the refused login until the replica has the new
password, within ``--replica-lag-timeout``; past it, the run stops in verify
with the pointer untouched, and the next run verifies the same password. The
PostgreSQL standby's counterpart is in tests/test_drain_replicas.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apps import MyApp, make_my_app
from clusters import Mariadb, mariadb_pair
from lagging import (
    adopt_reading_on,
    assert_resumes_verify_with_the_same_password,
    rotate_while_reading,
)
from servers import PrivateMariadb

from credflip.errors import RotationError
from credflip.layout import Layout
from credflip.rotation import Event, Notice, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase
from credflip.stores.sqlite import SqliteStore

#: A replica lag no verify waits out: the tests lift it when they have seen what
#: they wait for, so nothing depends on how fast the machine is.
HELD = 3600

#: The notice verify gives at the replica's first refusal of the new password.
WAITING = "waiting for the reader URL to accept"

Pair = tuple[Mariadb, PrivateMariadb, PrivateMariadb]


@pytest.fixture(scope="module")
def lagging() -> Iterator[Pair]:
    """A private MariaDB primary and a replica of it (each test sets its lag)."""
    with mariadb_pair() as pair:
        yield pair


def adopted(pair: Pair, store: SqliteStore, layout: Layout) -> MyApp:
    """A new app on the primary, adopted with its reader URL on the replica (once the
    replica has the app: its blue user must log in there)."""
    mariadb, primary, replica = pair
    replica.lag(0)
    app = make_my_app(mariadb)
    replica.catch_up(primary)
    adopt_reading_on(app, store, layout, replica.port)
    return app


def test_verify_retries_the_lagging_replica_and_readers_never_fail(
    lagging: Pair, sqlite_store: SqliteStore
) -> None:
    layout = Layout("mylag")
    app = adopted(lagging, sqlite_store, layout)
    replica = lagging[2]

    def lag_until_refused(event: Event) -> None:
        # Each prepare's changes reach the replica only once verify was refused there.
        if isinstance(event, PhaseStarted) and event.phase is Phase.PREPARE:
            replica.lag(HELD)
        elif isinstance(event, Notice) and event.message.startswith(WAITING):
            replica.lag(0)

    options = RotateOptions(client_ttl=0.3, quiet=0.3)
    results, events, traffic = rotate_while_reading(
        app, sqlite_store, layout, options, times=2, watch=lag_until_refused
    )
    notes = [e.message for e in events if isinstance(e, Notice)]
    waiting = [n for n in notes if n.startswith(WAITING)]
    assert all(result.finished for result in results), notes
    assert len(waiting) >= 2, notes  # one per rotation at least, at the first refusal
    assert "(a replica that has not replayed it yet)" in waiting[0]
    assert traffic.failed == 0, dict(traffic.errors)
    assert set(traffic.by_color) == {"blue", "green"}


def test_verify_past_the_lag_timeout_stops_and_resumes_with_the_same_password(
    lagging: Pair, sqlite_store: SqliteStore
) -> None:
    layout = Layout("mylagstop")
    app = adopted(lagging, sqlite_store, layout)
    _mariadb, primary, replica = lagging
    replica.lag(HELD)
    with pytest.raises(RotationError) as caught:
        rotate(
            sqlite_store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.2, quiet=0.2, replica_lag_timeout=0.3),
        )
    message = str(caught.value)
    assert message.startswith(
        f"verify failed for the green reader URL (mysql://{app.user}_green:***@127.0.0.1:"
        f"{replica.port}/"
    ), message
    assert "still refused after --replica-lag-timeout 0.3s (a replica that has not" in message
    assert "check its replication, or allow more time with --replica-lag-timeout" in message
    assert "The pointer still names blue; run 'credflip rotate' again to resume" in message
    replica.lag(0)
    replica.catch_up(primary)
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert_resumes_verify_with_the_same_password(app, sqlite_store, layout, options)
