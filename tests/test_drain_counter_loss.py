"""The drain tracker when a counter stops counting, or the server may have restarted, in the
middle of a run (fake clock, no database): never quiet until a new baseline."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from credflip.drain import DrainPolicy, DrainTracker, Reading, Verdict
from credflip.engines import Sessions

WHERE = "db-1:3306"
OFF = "userstat is OFF: as an admin with SUPER run SET GLOBAL userstat = ON"


def tracker(*, sessions_only: bool = False) -> DrainTracker:
    """Caches expired at once, a quiet window of one second."""
    return DrainTracker(
        DrainPolicy(client_ttl=0.0, quiet=1.0),
        switched_at=0.0,
        timeout_at=1e6,
        sessions_only=sessions_only,
    )


def reading(
    counters: Mapping[str, Hashable],
    *,
    silent: Mapping[str, str] | None = None,
    connection: int | None = 1,
    started: float | None = 5000.0,
) -> Reading:
    return Reading(
        WHERE,
        Sessions(),
        counters,
        started=started,
        silent=silent or {},
        connection=connection,
    )


def feed(trk: DrainTracker, start: float, until: float, make: Reading) -> list[Verdict]:
    """Samples every 0.2 s from *start* to *until*, all showing *make*."""
    out, t = [], start
    while t <= until + 1e-9:
        out.append(trk.observe(t, [make]).verdict)
        t += 0.2
    return out


def test_a_counter_that_stops_while_another_goes_on_is_never_quiet() -> None:
    """userstat turned off (SET GLOBAL, or lost in a restart) while performance_schema
    still counts: the drain does not finish on the other counter alone, and says why."""
    trk = tracker()
    both = reading({"accounts": 4, "user_statistics": 4})
    assert feed(trk, 0.0, 0.4, both)[-1] is Verdict.QUIET
    only_ps = reading({"accounts": 4}, silent={"user_statistics": OFF})
    verdicts = feed(trk, 0.6, 5.0, only_ps)
    assert set(verdicts) == {Verdict.IN_USE}
    status = trk.observe(5.2, [only_ps])
    assert status.reasons == (f"{WHERE}: its login counter user_statistics is gone ({OFF})",)
    # Back on: one sample to take a new baseline, then the window runs again.
    again = trk.observe(5.4, [both])
    assert again.verdict is Verdict.IN_USE
    assert again.reasons == (f"{WHERE}: user_statistics has no earlier sample to compare with",)
    assert feed(trk, 5.6, 6.8, both)[-1] is Verdict.DONE


def test_the_only_counter_gone_is_named_with_how_to_turn_it_on() -> None:
    trk = tracker()
    feed(trk, 0.0, 0.4, reading({"user_statistics": 7}))
    gone = reading({}, silent={"user_statistics": OFF, "accounts": "performance_schema is off"})
    assert set(feed(trk, 0.6, 10.0, gone)) == {Verdict.IN_USE}
    status = trk.observe(10.2, [gone])
    assert status.reasons == (f"{WHERE}: its login counter is gone ({OFF})",)


def test_with_sessions_only_a_counter_lost_beside_another_is_accepted() -> None:
    trk = tracker(sessions_only=True)
    feed(trk, 0.0, 0.4, reading({"accounts": 4, "user_statistics": 4}))
    assert feed(trk, 0.6, 2.0, reading({"accounts": 4}))[-1] is Verdict.DONE


def test_a_new_admin_connection_starts_the_counters_over() -> None:
    """A restart within the run, quicker than the start time tells (the server ran for a
    second before it): its counters started from zero and reached the same value
    again. The new admin connection says the server may have restarted: unknown,
    then a new baseline."""
    trk = tracker()
    assert feed(trk, 0.0, 0.4, reading({"user_statistics": 2}))[-1] is Verdict.QUIET
    after = reading({"user_statistics": 2}, connection=2, started=5001.0)
    status = trk.observe(0.6, [after])
    assert status.verdict is Verdict.IN_USE and status.quiet == 0.0
    assert status.reasons == (
        f"{WHERE} was read through a new admin connection, so its counters are compared from "
        f"here on (the server may have restarted)",
    )
    assert trk.observe(0.8, [after]).verdict is Verdict.QUIET
    # The same connection, or one the engine does not number: no restart.
    assert (
        trk.observe(1.0, [reading({"user_statistics": 2}, connection=2, started=5001.0)]).reasons
        == ()
    )
    assert trk.observe(1.2, [reading({"user_statistics": 2}, connection=None)]).reasons == ()
    assert feed(trk, 1.4, 2.0, after)[-1] is Verdict.DONE


def test_a_reading_that_failed_then_a_new_connection_is_unknown_once() -> None:
    trk = tracker()
    feed(trk, 0.0, 0.4, reading({"logins": 1}))
    status = trk.observe(0.6, [Reading(WHERE, error="lost the connection")])
    assert status.verdict is Verdict.IN_USE
    back = reading({"logins": 1}, connection=2)
    status = trk.observe(0.8, [back])
    assert status.verdict is Verdict.IN_USE
    assert "new admin connection" in status.reasons[0]
    assert trk.observe(1.0, [back]).verdict is Verdict.QUIET
