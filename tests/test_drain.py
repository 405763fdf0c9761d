"""The drain tracker on a fake clock: no database, no sleeping."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credflip.drain import (
    QUIET_TTLS,
    DrainPolicy,
    DrainTracker,
    Evidence,
    Reading,
    Verdict,
    random_client_factor,
)
from credflip.drain.policy import LEGACY_WINDOWS, share
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
    """A tracker whose quiet window is one TTL unless said otherwise (the arithmetic is
    easier to read; the default window has its own tests)."""
    policy.setdefault("client_ttl", TTL)
    policy.setdefault("quiet", policy["client_ttl"])
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
    # Used after the cache wait, with no pause seen: LEGACY_WINDOWS windows.
    assert first(verdicts, Verdict.DONE) == pytest.approx(5.0 + LEGACY_WINDOWS * TTL)


def test_a_counter_that_moves_between_samples_is_use() -> None:
    # Nothing is ever open at a sample, but a login count rises until t = 4.
    verdicts = run(tracker(), 20, lambda t: [reading(counter=min(int(t * 10), 40))])
    assert all(v is not Verdict.QUIET for t, v in verdicts if 1.1 < t <= 4.0)
    assert first(verdicts, Verdict.DONE) == pytest.approx(4.2 + LEGACY_WINDOWS * TTL)


def test_a_use_after_the_cache_wait_lengthens_the_window_until_two_pauses_are_known() -> None:
    """A use after the cache wait is a client that does not follow the pointer: until two
    of its pauses tell its rhythm, the window is LEGACY_WINDOWS times longer; a use
    before the cache wait (a follower not yet moved) is not; the next run keeps it."""
    early = run(tracker(), 10, lambda t: [reading(counter=int(t >= 0.6))])
    assert first(early, Verdict.DONE) == pytest.approx(2.2)  # one window after the caches
    # Seen by the first sample past the cache wait (1.2 s): it may have come before it.
    edge = run(tracker(), 10, lambda t: [reading(counter=int(t >= 1.05))])
    assert first(edge, Verdict.DONE) == pytest.approx(1.4 + TTL)
    trk = tracker()
    late = run(trk, 10, lambda t: [reading(counter=int(t >= 1.5))])
    assert first(late, Verdict.DONE) == pytest.approx(1.8 + LEGACY_WINDOWS * TTL)
    kept = Evidence.from_dict(trk.evidence("app").to_dict())
    assert kept.legacy and kept.needed_quiet(trk.policy) == LEGACY_WINDOWS * TTL
    # Two pauses of 0.6 s, alike: a periodic client; twice its pause, no longer two windows.
    uses = {1.4, 2.0, 2.6}
    steady = run(tracker(), 10, lambda t: [reading(counter=sum(u <= t for u in uses))])
    assert first(steady, Verdict.DONE) == pytest.approx(2.8 + 2 * 0.6)


def test_settled_once_the_sample_before_was_past_the_cache_wait() -> None:
    """What a sample saw is a legacy client's (named, and two windows) only when the
    sample before it was already past the cache wait: a follower's last request just
    before the caches expired (1.1 s) is seen one sample later."""
    trk = tracker()
    settled = []
    for t in (0.0, 1.0, 1.2, 1.4):
        trk.observe(t, [reading()])
        settled.append(trk.settled)
    assert settled == [False, False, False, True]
    resumed = tracker()  # a later run's first sample, long after the switch
    resumed.observe(30.0, [reading()])
    assert resumed.settled


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
    # Every login is seen at the next sample, and at the end of the run (60 s, before
    # the timeout) the drain is still waiting in the client's pause.
    in_use = [t for t, v in verdicts if v is Verdict.IN_USE]
    assert in_use == [round(2.6 + 3 * k, 3) for k in range(20)]
    assert verdicts[-1] == (60.0, Verdict.QUIET)

    # Once it stops, the drain needs the quiet its pauses call for: twice the pause.
    # Five pauses of exactly 3 s are too alike for a client arriving at random.
    trk = tracker(min_drain=7.0)
    stop = 20.0
    verdicts = run(trk, 200, lambda t: readings(min(t, stop)))
    seen = 17.6  # the sample that saw the last login (17.5)
    assert trk.pauses == 5 and trk.pause_sum == pytest.approx(15.0)
    assert trk.shortest == pytest.approx(3.0) and trk.policy.regular(5, 3.0, 3.0)
    needed = 2 * 3.0
    assert trk.needed() == pytest.approx(needed)
    done = first(verdicts, Verdict.DONE)
    assert done is not None and seen + needed < done <= seen + needed + 2 * STEP


def test_with_one_ttl_of_quiet_a_sparse_client_can_fall_in_the_first_window() -> None:
    """Why the default window is long: with one TTL of quiet and no floor, a client
    whose first login after the switch comes late is retired in its pause."""
    verdicts = run(tracker(), 60, lambda t: [reading(counter=int((t + 0.5) // 3))])
    assert first(verdicts, Verdict.DONE) == pytest.approx(2.2)


@pytest.mark.parametrize("period", [0.5, 1.5, 3.0, 5.0, 9.0])
def test_by_default_a_periodic_client_is_never_retired(period: float) -> None:
    """The rule users read: a client that uses the old user at least once per window
    (40 TTLs by default) is never cut off, seen before or not."""
    trk = DrainTracker(DrainPolicy(client_ttl=TTL), switched_at=0.0, timeout_at=1000.0)
    verdicts = run(trk, 300, lambda t: [reading(counter=int((t + period - 0.05) // period))])
    assert Verdict.DONE not in {v for _, v in verdicts}


def test_by_default_the_window_is_forty_ttls() -> None:
    policy = DrainPolicy(client_ttl=60.0)
    assert QUIET_TTLS == 40 and policy.window == 2400.0
    assert policy.shortest == pytest.approx(66.0 + 2400.0)
    assert policy.default_timeout == pytest.approx(66.0 + 2400.0 + 900.0)
    assert DrainPolicy(client_ttl=60.0, quiet=90.0).window == 90.0
    assert DrainPolicy(client_ttl=1.0, quiet=5.0, min_drain=60.0).shortest == 60.0


def test_a_resumed_drain_keeps_the_learned_pause() -> None:
    trk = DrainTracker(
        DrainPolicy(client_ttl=TTL, quiet=TTL),
        switched_at=-50.0,
        timeout_at=100.0,
        evidence=Evidence(longest_gap=3.0),
    )
    verdicts = run(trk, 30, lambda t: [reading()])
    # No counter digest was kept: the first sample is a baseline; then 2 x 3 s of quiet.
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
    policy = DrainPolicy(client_ttl=60.0, quiet=60.0, min_drain=600.0)
    assert policy.cache_wait == pytest.approx(66.0)
    assert policy.needed_quiet(0.0) == 60.0 and policy.needed_quiet(45.0) == 90.0
    assert policy.earliest_done(1000.0) == 1600.0
    assert DrainPolicy(client_ttl=60.0, quiet=60.0).earliest_done(1000.0) == pytest.approx(1126.0)
    # Two pauses of 10 s from a client that may arrive at random: 10 s x 61.
    assert policy.needed_quiet(10.0, 2, 20.0) == pytest.approx(10.0 * random_client_factor(2, 1e-3))


def test_evidence_asks_the_policy_with_the_pauses_it_kept() -> None:
    policy = DrainPolicy(client_ttl=60.0, quiet=60.0)
    seen = Evidence(longest_gap=10.0, pauses=2, pause_sum=20.0)
    assert seen.needed_quiet(policy) == policy.needed_quiet(10.0, 2, 20.0) > 600.0
    assert seen.earliest_done(policy, 1000.0) == policy.earliest_done(1000.0, 10.0, 2, 20.0)
    assert Evidence().needed_quiet(policy) == 60.0


def test_the_random_client_factor() -> None:
    assert random_client_factor(2, 1e-3) == pytest.approx(87.4, abs=0.1)
    assert random_client_factor(5, 1e-3) == pytest.approx(31.2, abs=0.1)
    assert random_client_factor(20, 1e-3) == pytest.approx(18.0, abs=0.1)
    assert random_client_factor(100, 1e-3) == pytest.approx(17.5, abs=0.1)
    # The promise it encodes, checked by its own arithmetic: with the mean of n
    # exponential pauses, (1 + k/n)^-n is the chance the next one is longer, and
    # the drain spends odds / (n (n - 1)) of its budget at n pauses: all of it in all.
    for n in (2, 5, 20):
        k = random_client_factor(n, 1e-3)
        assert (1 + k / n) ** -n == pytest.approx(1e-3 / (n * (n - 1)))
    assert sum(share(n, 1e-3) for n in range(2, 100_000)) == pytest.approx(1e-3, rel=1e-4)


def test_a_random_client_stretches_the_window() -> None:
    """Poisson uses with a mean pause of 3 s and a 5 s window: the window grows past
    what the observed pauses make likely, and the drain does not finish while it runs."""
    import random

    rng = random.Random(7)
    arrivals, t = [], 0.0
    while t < 600:
        t += rng.expovariate(1 / 3.0)
        arrivals.append(t)
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=5.0), switched_at=0.0, timeout_at=1e9)
    verdicts = run(trk, 590, lambda now: [reading(counter=sum(1 for a in arrivals if a <= now))])
    assert Verdict.DONE not in {v for _, v in verdicts}
    assert trk.pauses > 100
    assert trk.policy.needed_quiet(trk.longest_gap, trk.pauses, trk.pause_sum) > 6.5 * 3.0 * 0.8


def resumed(
    evidence: Evidence,
    *,
    switched_at: float = -100.0,
    sessions_only: bool = False,
    **policy: float,
) -> DrainTracker:
    policy.setdefault("client_ttl", TTL)
    policy.setdefault("quiet", 10.0)
    return DrainTracker(
        DrainPolicy(**policy),
        switched_at=switched_at,
        timeout_at=1000.0,
        evidence=Evidence.from_dict(evidence.to_dict()),  # as stored and read back
        sessions_only=sessions_only,
    )


def first_run(until: float, counter: int = 3) -> DrainTracker:
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=10.0), switched_at=-100.0, timeout_at=1e3)
    run(trk, until, lambda t: [reading(counter=counter)])
    return trk


def test_a_second_run_continues_the_quiet_window() -> None:
    trk = first_run(4.0)  # quiet from 0.2 (the second sample) to 4.0
    evidence = trk.evidence("app_blue")
    assert evidence.quiet_since == pytest.approx(0.2)
    # Ten minutes later, nothing moved: the window began at 0.2, so it is done at once.
    later = resumed(evidence)
    assert later.observe(600.0, [reading(counter=3)]).verdict is Verdict.DONE


def test_a_counter_that_moved_between_runs_is_use() -> None:
    evidence = first_run(4.0).evidence("app_blue")
    later = resumed(evidence)
    status = later.observe(600.0, [reading(counter=4)])
    assert status.verdict is Verdict.IN_USE
    assert status.reasons == ("the counters on db-1:5432 changed since the last run",)
    # The new value is the baseline: quiet from the next sample on.
    assert later.observe(600.2, [reading(counter=4)]).verdict is Verdict.QUIET


def test_an_instance_the_earlier_run_did_not_see_has_no_baseline() -> None:
    evidence = first_run(4.0).evidence("app_blue")
    later = resumed(evidence)
    status = later.observe(600.0, [reading(counter=3), reading(counter=1, instance="db-2:5432")])
    assert status.verdict is Verdict.IN_USE
    assert status.reasons == ("db-2:5432: logins has no earlier sample to compare with",)


def test_a_server_restart_between_runs_starts_the_window_over() -> None:
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=10.0), switched_at=-100.0, timeout_at=1e3)
    run(trk, 4.0, lambda t: [Reading("db-1:5432", NONE, {"logins": 3}, started=5000.0)])
    later = resumed(trk.evidence("app_blue"))
    # Restarted: its counters started over, and happen to show the same value. Not a
    # use (nothing says anyone logged in), but unknown: the window starts over.
    status = later.observe(600.0, [Reading("db-1:5432", NONE, {"logins": 3}, started=5590.0)])
    assert status.verdict is Verdict.IN_USE and not status.used_late
    assert status.reasons == ("db-1:5432 restarted since the last sample",)
    again = later.observe(600.2, [Reading("db-1:5432", NONE, {"logins": 3}, started=5590.0)])
    assert again.verdict is Verdict.QUIET and again.quiet == 0.0
    # A start time read a second apart is the same start.
    same = resumed(trk.evidence("app_blue"))
    reading_again = Reading("db-1:5432", NONE, {"logins": 3}, started=5001.0)
    assert same.observe(600.0, [reading_again]).verdict is Verdict.DONE


def test_the_evidence_is_small() -> None:
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=10.0), switched_at=0.0, timeout_at=1e3)
    many = [
        Reading(
            f"db-{i}.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com:5432",
            NONE,
            {"pg_stat_statements": tuple(range(50)), "evictions": ("0", "x")},
            started=1e9,
        )
        for i in range(16)
    ]
    trk.observe(0.0, many)
    evidence = trk.evidence("app_blue")
    evidence.pause_min, evidence.idle_since, evidence.quiet_since = 3599.87, 1.7e9, 1.7e9
    text = str(evidence.to_dict())
    assert len(text) < 1800, len(text)
    assert Evidence.from_dict({"i": "damaged"}) == Evidence()


def test_past_the_timeout_use_ends_the_run_and_quiet_goes_on() -> None:
    # Switched long ago, timeout long past; this run may last 30 s.
    trk = DrainTracker(
        DrainPolicy(client_ttl=TTL, quiet=10.0),
        switched_at=-1000.0,
        timeout_at=-100.0,
    )
    assert trk.observe(0.0, [reading(held())]).verdict is Verdict.TIMEOUT
    trk = DrainTracker(
        DrainPolicy(client_ttl=TTL, quiet=10.0),
        switched_at=-1000.0,
        timeout_at=-100.0,
    )
    verdicts = run(trk, 60, lambda t: [reading()])
    # The first sample is the counters' baseline: not use, so the run goes on, quiet
    # from the next sample until the window is done.
    assert verdicts[-1][1] is Verdict.DONE and verdicts[-1][0] == pytest.approx(10.2)


def test_terminate_ends_only_sessions_idle_for_the_whole_window() -> None:
    def idle(seconds: float) -> Sessions:
        return Sessions((SessionGroup("10.0.0.5", "pool", 2, idle_for=seconds),))

    def trk(terminate: bool) -> DrainTracker:
        policy = DrainPolicy(client_ttl=TTL, quiet=5.0, min_drain=20.0)
        return DrainTracker(policy, switched_at=0.0, timeout_at=30.0, terminate=terminate)

    # Without --terminate an idle pooled session is use, forever.
    verdicts = run(trk(False), 100, lambda t: [reading(idle(t))])
    assert verdicts[-1][1] is Verdict.TIMEOUT
    # With it: held once idle for the window, and DONE only after --min-drain.
    tracker_ = trk(True)
    verdicts = run(tracker_, 100, lambda t: [reading(idle(t))])
    done = first(verdicts, Verdict.DONE)
    assert done == pytest.approx(20.0)
    assert tracker_.observe(20.2, [reading(idle(20.2))]).held == 2
    # An active session is never held.
    active = Sessions((SessionGroup("10.0.0.5", "pool", 1, idle_for=None),))
    assert run(trk(True), 100, lambda t: [reading(active)])[-1][1] is Verdict.TIMEOUT


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
    no use for the window the pauses seen call for since the last sample that saw one."""
    policy = DrainPolicy(client_ttl=ttl, quiet=ttl, min_drain=min_drain)
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
            assert t - last_seen >= trk.needed() - 1e-9
            assert not [x for x in logins if last_seen < x <= t]  # nothing used it since
            break
        t = round(t + STEP, 6)


def test_a_standby_still_replaying_at_the_start_of_a_later_run_keeps_the_window() -> None:
    """Under write load a standby is always a little behind when a run starts: the
    window an earlier run began holds until the standby compared its counters too."""
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=10.0), switched_at=-100.0, timeout_at=1e3)
    both = [reading(counter=3), reading(counter=1, instance="db-2:5432")]
    run(trk, 4.0, lambda t: both)
    later = resumed(trk.evidence("app_blue"))
    pending = reading(counter=1, instance="db-2:5432", pending="standby has not yet replayed")
    first_status = later.observe(600.0, [reading(counter=3), pending])
    assert first_status.verdict is Verdict.IN_USE  # unknown, not the end of the run
    assert later.observe(600.2, both).verdict is Verdict.DONE  # the window began at 0.2


def test_past_the_timeout_a_replaying_standby_ends_a_run_only_after_a_grace() -> None:
    trk = DrainTracker(
        DrainPolicy(client_ttl=TTL, quiet=50.0, pending_grace=5.0),
        switched_at=-1000.0,
        timeout_at=-100.0,
    )
    pending = [reading(), reading(instance="db-2:5432", pending="replaying")]
    verdicts = run(trk, 60, lambda t: pending)
    assert verdicts[-1] == (5.0, Verdict.TIMEOUT)


def test_an_instance_without_a_kept_fingerprint_voids_the_kept_window() -> None:
    evidence = first_run(4.0).evidence("app_blue")
    # A replica added between the runs, watched on sessions alone (the risk accepted).
    later = resumed(evidence, sessions_only=True)
    bare = Reading("db-2:5432", NONE, {})
    assert later.observe(600.0, [reading(counter=3), bare]).verdict is Verdict.QUIET
    assert later.observe(600.2, [reading(counter=3), bare]).verdict is Verdict.QUIET
    status = later.observe(600.4, [reading(counter=3), bare])
    assert status.quiet == pytest.approx(0.4)  # the window starts in this run


def test_a_counter_lost_in_the_middle_of_a_drain_is_not_quiet() -> None:
    trk = tracker()
    run(trk, 2.0, lambda t: [reading(counter=3)])
    lost = Reading("db-1:5432", NONE, {})
    status = trk.observe(2.2, [lost])
    assert status.verdict is Verdict.IN_USE
    assert status.reasons == ("db-1:5432: its login counter is gone",)
    assert trk.observe(9.0, [lost]).verdict is Verdict.IN_USE
    # Accepted with --sessions-only: open sessions alone from there on.
    accepting = DrainTracker(
        DrainPolicy(client_ttl=TTL, quiet=TTL),
        switched_at=0.0,
        timeout_at=100.0,
        sessions_only=True,
    )
    run(accepting, 2.0, lambda t: [reading(counter=3)])
    assert accepting.observe(2.2, [lost]).verdict in (Verdict.QUIET, Verdict.DONE)


def test_the_time_between_two_runs_is_no_pause() -> None:
    """An hourly job, and rotate run again a day later: the day is the operator's
    schedule, not a pause of the client's; it must not stretch the window."""
    trk = DrainTracker(DrainPolicy(client_ttl=TTL, quiet=10.0), switched_at=-100.0, timeout_at=1e3)
    run(trk, 4.0, lambda t: [reading(counter=3 if t < 2 else 4)])  # one use at 2.0
    evidence = trk.evidence("app_blue")
    later = resumed(evidence)
    assert later.observe(86_400.0, [reading(counter=9)]).verdict is Verdict.IN_USE
    assert later.observe(86_401.0, [reading(counter=10)]).verdict is Verdict.TIMEOUT  # past it
    assert later.longest_gap < 60
