"""An instance that never counted logins is never quiet, unless draining on open sessions
alone is accepted (per run or stored for the env): the start refuses one, but not one it
cannot reach, which may come back during the drain still without a counter.

The tracker on a fake clock first, then a private MariaDB replica with ``userstat`` off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps import make_my_app
from clusters import Mariadb, mariadb_pair
from helpers import connects, login_error
from servers import PrivateMariadb

from credflip import commands
from credflip.drain import DrainPolicy, DrainTracker, Evidence, Reading, Verdict
from credflip.drain.evidence import UNCOUNTED
from credflip.engines import Sessions
from credflip.errors import DrainTimeout
from credflip.layout import Layout
from credflip.rotation import Event, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore

ENABLE = "as a superuser run CREATE EXTENSION pg_stat_statements in database shop"


def readings(t: float) -> list[Reading]:
    """A counted primary; a replica read without a counter, and what would enable one."""
    return [
        Reading("db-1:5432", Sessions(), {"logins": 3}),
        Reading("db-2:5432", Sessions(), {}, enable=ENABLE),
    ]


def verdicts(trk: DrainTracker, until: float) -> list[Verdict]:
    return [trk.observe(k / 5, readings(k / 5)).verdict for k in range(int(until * 5) + 1)]


def test_without_sessions_only_an_instance_that_never_counted_is_never_quiet() -> None:
    """Unknown at every sample (it used to drain on open sessions within a run, only its
    window not carrying over to the next), named with what enables its counter; with
    the risk accepted, it drains on open sessions."""
    policy = DrainPolicy(client_ttl=1.0, quiet=1.0)
    trk = DrainTracker(policy, switched_at=0.0, timeout_at=100.0)
    assert set(verdicts(trk, 50.0)) == {Verdict.CACHES, Verdict.IN_USE}
    status = DrainTracker(policy, switched_at=0.0, timeout_at=100.0).observe(5.0, readings(5.0))
    assert status.reasons[1:] == (
        f"db-2:5432 counts no logins ({ENABLE}): enable a counter there, or accept draining "
        'on open sessions alone with --sessions-only (Lambda: "sessions_only": true)',
    )
    accepted = DrainTracker(policy, switched_at=0.0, timeout_at=100.0, sessions_only=True)
    assert verdicts(accepted, 50.0)[-1] is Verdict.DONE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    st = SqliteStore(tmp_path / "params.db")
    yield st
    st.close()


@pytest.fixture(scope="module")
def my_pair() -> Iterator[tuple[Mariadb, PrivateMariadb, PrivateMariadb]]:
    """A private MariaDB primary and a replica of it, both with userstat on."""
    with mariadb_pair() as pair:
        yield pair


def test_a_replica_that_was_down_at_the_start_and_counts_nothing_keeps_the_old_user(
    my_pair: tuple[Mariadb, PrivateMariadb, PrivateMariadb], store: SqliteStore
) -> None:
    """A run that accepted --sessions-only for a replica without a login counter stopped
    in the drain. The next one, without it, starts while that replica is down (its start
    cannot see the replica's counters, so it does not refuse), and the replica comes
    back still counting nothing: the drain does not finish on open sessions there, and
    names what enables its counter. With the risk accepted again, it finishes."""
    mariadb, primary, replica = my_pair
    app = make_my_app(mariadb)
    replica.catch_up(primary)
    layout = Layout("uncounted")
    where = f"127.0.0.1:{replica.port}"
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url, instances=(where,))

    def counting_nothing(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is Phase.DRAIN:
            replica.resume()
            replica.sql("SET GLOBAL userstat = OFF")

    fast = RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=1.0)
    replica.sql("SET GLOBAL userstat = OFF")  # after init, which turns it on
    try:
        with app.open(app.url), pytest.raises(DrainTimeout):  # blue held: stops in the drain
            rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=dataclasses.replace(fast, sessions_only=True),
            )
        kept = load_state(store, layout).current
        assert kept is not None and Evidence.from_dict(kept.evidence).counters[where] == UNCOUNTED
        replica.halt()
        with pytest.raises(DrainTimeout) as caught:
            rotate(store, layout, admin_url=app.admin_url, options=fast, on_event=counting_nothing)
        message = str(caught.value)
        assert f"{where} counts no logins (" in message, message
        assert "SET GLOBAL userstat = ON" in message
        assert "--sessions-only" in message
        assert connects(app.url)  # blue was not retired
        done = rotate(
            store,
            layout,
            admin_url=app.admin_url,
            options=dataclasses.replace(fast, sessions_only=True),
        )
        assert done.finished and done.resumed
        assert app.locked_marker in login_error(app.url)
    finally:
        if replica.server is not None and replica.server.poll() is not None:
            replica.resume()
        replica.sql("SET GLOBAL userstat = ON")
        replica.catch_up(primary)
