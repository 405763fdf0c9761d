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
from credflip.rotation import Notice, RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore

#: Seconds the replica applies each event after the primary wrote it. MariaDB
#: stamps events to the second: the replica lags between DELAY - 1 and DELAY s,
#: and verify must reach it within DELAY - 1 s of prepare's last statement to be
#: refused: a margin a busy 2-core machine (load 20) may eat with DELAY 2.
DELAY = 5

Pair = tuple[Mariadb, PrivateMariadb, PrivateMariadb]


@pytest.fixture(scope="module")
def lagging() -> Iterator[Pair]:
    """A private MariaDB primary and a replica of it that lags DELAY seconds."""
    with mariadb_pair() as pair:
        pair[2].lag(DELAY)
        yield pair


def adopted(pair: Pair, store: SqliteStore, layout: Layout) -> MyApp:
    """A new app on the primary, adopted with its reader URL on the replica (once the
    replica has the app: its blue user must log in there)."""
    mariadb, primary, replica = pair
    app = make_my_app(mariadb)
    replica.catch_up(primary)
    adopt_reading_on(app, store, layout, replica.port)
    return app


def test_verify_retries_the_lagging_replica_and_readers_never_fail(
    lagging: Pair, sqlite_store: SqliteStore
) -> None:
    layout = Layout("mylag")
    app = adopted(lagging, sqlite_store, layout)
    options = RotateOptions(client_ttl=0.3, quiet=0.3)
    results, events, traffic = rotate_while_reading(app, sqlite_store, layout, options, times=2)
    notes = [e.message for e in events if isinstance(e, Notice)]
    waiting = [n for n in notes if n.startswith("waiting for the reader URL to accept")]
    for result in results:
        assert result.finished, notes
        # The replica refused the new password at first, and verify waited for it
        # (until DELAY - 1 s after prepare at least; a second is bound enough).
        assert result.timings["verify"] >= 1.0, (result.timings, notes)
    assert len(waiting) >= 2, notes  # one per rotation, at the first refusal
    assert "(a replica that has not replayed it yet)" in waiting[0]
    assert traffic.failed == 0, dict(traffic.errors)
    assert set(traffic.by_color) == {"blue", "green"}


def test_verify_past_the_lag_timeout_stops_and_resumes_with_the_same_password(
    lagging: Pair, sqlite_store: SqliteStore
) -> None:
    layout = Layout("mylagstop")
    app = adopted(lagging, sqlite_store, layout)
    replica = lagging[2]
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
    options = RotateOptions(client_ttl=0.2, quiet=0.2)
    assert_resumes_verify_with_the_same_password(app, sqlite_store, layout, options)
