"""The drain tracker on a fake clock: no database, no sleeping."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credflip.drain import DrainPolicy, DrainTracker, Reading, Verdict
from credflip.engines import SessionGroup, Sessions

TTL = 1.0
STEP = 0.2  # the rotation samples every 200 ms
NONE = Sessions()


def held(n: int = 1) -> Sessions:
    return Sessions((SessionGroup("10.0.0.5", "api", n),))


def reading(
    sessions: Sessions | None = NONE,
    counter: Hashable = 0,
    *,
    instance: str = "db-1:5432",
    pending: str | None = None,
    error: str | None = None,
) -> Reading:
    counters = {} if counter is None else {"logins": counter}
    return Reading(instance, sessions, counters, pending=pending, error=error)


def tracker(**policy: float) -> DrainTracker:
    policy.setdefault("client_ttl", TTL)
    return DrainTracker(DrainPolicy(**policy), switched_at=0.0, timeout_at=100.0)


def run(
    trk: DrainTracker, until: float, make: object, start: float = 0.0
) -> list[tuple[float, Verdict]]:
    """Sample every STEP from *start* to *until*; *make(t)* gives the readings."""
    out = []
    t = start
    while t <= until + 1e-9:
        status = trk.observe(t, make(t))  # type: ignore[operator]
        out.append((round(t, 3), status.verdict))
        if status.verdict in (Verdict.DONE, Verdict.TIMEOUT):
            break
        t = round(t + STEP, 6)
    return out


def first(verdicts: list[tuple[float, Verdict]], verdict: Verdict) -> float | None:
    return next((t for t, v in verdicts if v is verdict), None)


def test_waits_for_caches_then_one_quiet_ttl() -> None:
    verdicts = run(tracker(), 10, lambda t: [reading()])
    assert verdicts[0][1] is Verdict.CACHES
    # Caches expire at 1.1 s (TTL + 10 % jitter); the quiet window starts at
    # the first sample after that and must last one TTL.
    assert first(verdicts, Verdict.QUIET) == pytest.approx(1.2)
    assert first(verdicts, Verdict.DONE) == pytest.approx(2.2)


def test_an_open_session_keeps_it_in_use() -> None:
    verdicts = run(tracker(), 10, lambda t: [reading(held() if t < 5 else NONE)])
    assert first(verdicts, Verdict.QUIET) == pytest.approx(5.0)
    assert first(verdicts, Verdict.DONE) == pytest.approx(6.0)


def test_a_counter_that_moves_between_samples_is_use() -> None:
    # Nothing is ever open at a sample, but a login count rises until t = 4.
    verdicts = run(tracker(), 20, lambda t: [reading(counter=min(int(t * 10), 40))])
    assert all(v is not Verdict.QUIET for t, v in verdicts if 1.1 < t <= 4.0)
    assert first(verdicts, Verdict.DONE) == pytest.approx(4.2 + TTL)


@pytest.mark.parametrize("change", ["down", "reset", "gone"])
def test_a_counter_that_drops_or_resets_is_use_never_quiet(change: str) -> None:
    trk = tracker()
    for t in (0.0, 1.2, 1.4):
        trk.observe(t, [reading(counter=7)])
    after = {"down": 3, "reset": 0, "gone": None}[change]
    status = trk.observe(1.6, [reading(counter=after)])
    if change == "gone":
        # The signal disappeared: nothing to compare, and its return has no baseline.
        assert trk.observe(1.8, [reading(counter=7)]).verdict is Verdict.IN_USE
    else:
        assert status.verdict is Verdict.IN_USE
        assert status.reasons == ("logins changed on db-1:5432",)


def test_a_counter_seen_first_has_no_baseline() -> None:
    trk = tracker()
    status = trk.observe(2.0, [reading(counter=5)])  # caches long expired
    assert status.verdict is Verdict.IN_USE and "no earlier sample" in status.reasons[0]
    assert trk.observe(2.2, [reading(counter=5)]).verdict is Verdict.QUIET
    # A missing baseline is not a use: it teaches nothing about pauses.
    assert trk.longest_gap == 0.0


def test_an_unreachable_instance_never_lets_it_finish() -> None:
    def readings(t: float) -> list[Reading]:
        return [reading(), reading(None, None, instance="db-2:5432", error="connection refused")]

    verdicts = run(tracker(), 100, readings)
    assert Verdict.DONE not in {v for _, v in verdicts}
    assert verdicts[-1] == (100.0, Verdict.TIMEOUT)
    status = tracker().observe(5.0, readings(5.0))
    assert "db-2:5432 unreachable: connection refused" in status.reasons


def test_a_standby_still_replaying_is_unknown() -> None:
    def readings(t: float) -> list[Reading]:
        pending = "standby has not yet replayed the start of the drain" if t < 3 else None
        return [reading(), reading(instance="db-2:5432", pending=pending)]

    verdicts = run(tracker(), 10, readings)
    # Pending until 3.0, the first comparable sample at 3.2, then one TTL.
    assert first(verdicts, Verdict.QUIET) == pytest.approx(3.2)
    assert first(verdicts, Verdict.DONE) == pytest.approx(4.2)


def test_min_drain_is_a_floor() -> None:
    trk = tracker(min_drain=8.0)
    verdicts = run(trk, 20, lambda t: [reading()])
    assert first(verdicts, Verdict.DONE) == pytest.approx(8.0)
    status = tracker(min_drain=8.0).observe(3.0, [reading()])
    assert status.done_in == pytest.approx(5.0)


def test_a_periodic_client_is_not_retired_in_its_pause() -> None:
    """A legacy client logs in every 3 s (one counter step); the TTL is 1 s."""

    def readings(t: float) -> list[Reading]:
        return [reading(counter=int((t + 0.5) // 3))]  # logins at 2.5, 5.5, 8.5, ...

    trk = tracker(min_drain=7.0)
    verdicts = run(trk, 60, readings)
    assert Verdict.DONE not in {v for _, v in verdicts}
    assert trk.longest_gap == pytest.approx(3.0)
    assert verdicts[-1][1] is Verdict.TIMEOUT or verdicts[-1][0] == 60.0

    # Once it stops, the drain needs twice its pause of quiet.
    trk = tracker(min_drain=7.0)
    stop = 20.0
    verdicts = run(trk, 60, lambda t: readings(min(t, stop)))
    seen = 17.6  # the sample that saw the last login (17.5)
    done = first(verdicts, Verdict.DONE)
    assert done is not None and seen + 6.0 < done <= seen + 6.0 + 2 * STEP


def test_without_min_drain_a_sparse_client_can_fall_in_the_first_window() -> None:
    """What the README says: with one TTL of quiet and no floor, a client whose
    first login after the switch comes late is retired in its pause."""
    verdicts = run(tracker(), 60, lambda t: [reading(counter=int((t + 0.5) // 3))])
    assert first(verdicts, Verdict.DONE) == pytest.approx(2.2)


def test_a_resumed_drain_keeps_the_learned_pause() -> None:
    trk = DrainTracker(
        DrainPolicy(client_ttl=TTL), switched_at=-50.0, timeout_at=100.0, longest_gap=3.0
    )
    verdicts = run(trk, 30, lambda t: [reading()])
    # The first sample is the baseline of a fresh run; then 2 x 3 s of quiet.
    assert first(verdicts, Verdict.DONE) == pytest.approx(0.2 + 6.0)


def test_status_numbers() -> None:
    trk = tracker()
    trk.observe(0.0, [reading(held(2))])
    status = trk.observe(0.4, [reading(held(2)), reading(held(), instance="db-2:5432")])
    assert status.verdict is Verdict.CACHES and status.sessions == 3
    assert status.caches_in == pytest.approx(0.7)
    assert status.timeout_in == pytest.approx(99.6)
    assert status.reasons == (
        "2 session(s) on db-1:5432 (2 from 10.0.0.5 (api))",
        "1 session(s) on db-2:5432 (1 from 10.0.0.5 (api))",
        "db-2:5432: logins has no earlier sample to compare with",
    )


def test_policy_arithmetic() -> None:
    policy = DrainPolicy(client_ttl=60.0, min_drain=600.0)
    assert policy.cache_wait == pytest.approx(66.0)
    assert policy.needed_quiet(0.0) == 60.0 and policy.needed_quiet(45.0) == 90.0
    assert policy.earliest_done(1000.0) == 1600.0
    assert DrainPolicy(client_ttl=60.0).earliest_done(1000.0) == pytest.approx(1126.0)


uses = st.lists(st.floats(min_value=0.0, max_value=40.0), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    logins=uses,
    held_until=st.floats(min_value=0.0, max_value=20.0),
    ttl=st.sampled_from([0.5, 1.0, 2.0]),
    min_drain=st.sampled_from([0.0, 5.0]),
)
def test_done_only_after_a_full_quiet_window(
    logins: list[float], held_until: float, ttl: float, min_drain: float
) -> None:
    """Whatever the uses, DONE comes only after the caches expired, min_drain passed, and
    no use for max(TTL, 2 x the longest pause seen) since the last sample that saw one."""
    policy = DrainPolicy(client_ttl=ttl, min_drain=min_drain)
    trk = DrainTracker(policy, switched_at=0.0, timeout_at=60.0)
    last_seen: float | None = None
    t = 0.0
    while t <= 60.0:
        count = sum(1 for x in logins if x <= t)
        sessions = held() if t < held_until else NONE
        status = trk.observe(t, [reading(sessions, count)])
        if status.reasons:
            last_seen = t
        if status.verdict is Verdict.DONE:
            assert t >= policy.cache_wait + ttl - 1e-9
            assert t >= min_drain - 1e-9
            assert last_seen is not None
            assert t - last_seen >= policy.needed_quiet(trk.longest_gap) - 1e-9
            assert not [x for x in logins if last_seen < x <= t]  # nothing used it since
            break
        t = round(t + STEP, 6)
