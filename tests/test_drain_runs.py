"""A drain across runs, on a fake clock: invocations as the rotator's schedule makes them.

Each invocation is a new tracker from the evidence the last one kept (stored and
read back, as in the state), sampling until DONE or its deadline; at the deadline
it reports drain_timeout or pauses the way rotation/watch.py decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from credflip.drain import DrainPolicy, DrainStatus, DrainTracker, Evidence, Reading, Verdict
from credflip.drain.evidence import UNCOUNTED
from credflip.engines import SessionGroup, Sessions

NONE = Sessions()
TTL = 60.0
POLICY = DrainPolicy(client_ttl=TTL)  # a 40 min window
TIMEOUT = POLICY.default_timeout  # 66 s + 40 min + 15 min from the switch
RUN, EVERY, STEP = 870.0, 900.0, 5.0  # a Lambda of 14.5 min every 15 min

Make = Callable[[float, int], list[Reading]]


@dataclass
class Schedule:
    """Invocations every EVERY seconds from the switch, each sampling every STEP for RUN."""

    make: Make
    policy: DrainPolicy = POLICY
    timeout_at: float = TIMEOUT
    sessions_only: bool = False
    evidence: Evidence | None = None
    outcomes: list[str] = field(default_factory=list)
    last: DrainStatus | None = None
    done_at: float | None = None

    def invoke(self, k: int) -> str:
        start = k * EVERY
        evidence = None if self.evidence is None else Evidence.from_dict(self.evidence.to_dict())
        trk = DrainTracker(
            self.policy,
            switched_at=0.0,
            timeout_at=self.timeout_at,
            evidence=evidence,
            sessions_only=self.sessions_only,
        )
        t, timed_out = start, False
        while True:
            status = self.last = trk.observe(t, self.make(t, k))
            self.evidence = trk.evidence("app_blue")
            if status.verdict is Verdict.DONE:
                self.done_at = t
                outcome = "done"
                break
            timed_out |= status.verdict is Verdict.TIMEOUT
            if t + STEP >= start + RUN:
                # As rotation/watch.py at a scheduled run's deadline.
                alarm = timed_out or status.used_late or status.stuck
                outcome = "drain_timeout" if alarm else "paused"
                break
            t += STEP
        self.outcomes.append(outcome)
        return outcome

    def until_done(self, runs: int) -> list[str]:
        for k in range(runs):
            if self.invoke(k) == "done":
                break
        return self.outcomes


def counted(t: float, k: int, *, value: int = 3, started: float | None = None) -> Reading:
    return Reading("db-1:5432", NONE, {"logins": value}, started=started)


def bare(instance: str = "db-2:5432") -> Reading:
    """An instance with no login counter: watched on open sessions alone."""
    return Reading(instance, NONE, {})


# -- 1. on open sessions alone, the window carries over -------------------------------


@pytest.mark.parametrize("fleet", ["sessions only", "one replica without a counter"])
def test_a_sessions_only_drain_longer_than_one_invocation_finishes(fleet: str) -> None:
    """init --sessions-only (no counter anywhere), or a replica without one with the risk
    accepted: the window one invocation began carries over into the next, and the drain
    finishes 40 min after the cache wait, in the third invocation."""

    def make(t: float, k: int) -> list[Reading]:
        return [bare("db-1:5432")] if fleet == "sessions only" else [counted(t, k), bare()]

    schedule = Schedule(make, sessions_only=True)
    assert schedule.until_done(8) == ["paused", "paused", "done"]
    assert schedule.done_at == 70.0 + 2400.0  # the first quiet sample after 66 s, + 40 min
    assert schedule.evidence is not None
    assert UNCOUNTED in schedule.evidence.counters.values()


def test_an_instance_the_last_run_did_not_watch_voids_the_kept_window() -> None:
    """A replica added between two runs, watched on sessions alone with the risk accepted:
    nobody watched it between the runs, so the window starts over; the next run carries
    the new one."""
    schedule = Schedule(lambda t, k: [counted(t, k)] + ([bare()] if k >= 1 else []))
    schedule.sessions_only = True
    schedule.invoke(0)
    assert schedule.invoke(1) == "paused"
    assert schedule.last is not None and schedule.last.quiet == pytest.approx(RUN - STEP)
    assert schedule.until_done(8)[-1] == "done"
    assert schedule.done_at == 900.0 + 2400.0


# -- 1. the backstop: a window that cannot carry over raises the alarm ----------------


def test_a_window_restarted_at_every_invocation_raises_drain_timeout() -> None:
    """The server restarts between every two invocations: nobody uses the old user, but
    each run starts the window over. Past the timeout, a run pauses while the restarts
    could still be a one-off; once nothing used the old user for two windows (80 min
    after the cache wait) and the window again began in this run, it reports it."""
    schedule = Schedule(lambda t, k: [counted(t, k, started=1e9 + 60 * k)])
    outcomes = [schedule.invoke(k) for k in range(7)]
    # Runs end at 870, 1770, ..., 4470 (past the timeout at 3366, but less than 80 min
    # after the first quiet sample at 70): paused; the run ending at 5370: the alarm.
    assert outcomes == ["paused"] * 5 + ["drain_timeout"] * 2
    assert schedule.last is not None and not schedule.last.used_late
    assert schedule.last.stuck == ("db-1:5432 restarted since the last sample",)


def test_without_sessions_only_an_uncounted_instance_never_carries_and_raises_it() -> None:
    schedule = Schedule(lambda t, k: [counted(t, k), bare()])
    outcomes = [schedule.invoke(k) for k in range(7)]
    assert outcomes == ["paused"] * 5 + ["drain_timeout"] * 2
    assert schedule.last is not None
    assert schedule.last.stuck == (
        "db-2:5432 counts no logins: enable a counter there, or accept draining on open "
        'sessions alone with --sessions-only (Lambda: "sessions_only": true)',
    )


def test_a_one_off_restart_past_the_timeout_only_puts_the_window_off() -> None:
    """The same restart once (Aurora patching between two invocations, past the
    timeout): no alarm, the window starts over and the drain finishes a window later."""
    schedule = Schedule(
        lambda t, k: [counted(t, k, started=1e9 + (60 if k >= 2 else 0))], timeout_at=1000.0
    )
    assert schedule.until_done(10) == ["paused"] * 4 + ["done"]
    assert schedule.done_at == 2 * EVERY + STEP + 2400.0  # quiet from the sample after


# -- 2. a restart is unknown, a use between runs is use -------------------------------


def test_a_restart_between_runs_is_unknown_not_use() -> None:
    """Past the timeout: the restart is named, starts the window over, and does not end
    the run; the counters it reset are compared from there on."""
    first = DrainTracker(POLICY, switched_at=0.0, timeout_at=100.0)
    for t in (60.0, 70.0):
        first.observe(t, [counted(t, 0, value=7, started=1e9)])
    kept = Evidence.from_dict(first.evidence("app_blue").to_dict())
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=100.0, evidence=kept)
    status = trk.observe(900.0, [counted(900.0, 1, value=0, started=1e9 + 600)])
    assert status.verdict is Verdict.IN_USE  # unknown: the window starts over
    assert status.reasons == ("db-1:5432 restarted since the last sample",)
    assert not status.used_late and not status.stuck
    status = trk.observe(905.0, [counted(905.0, 1, value=0, started=1e9 + 600)])
    assert status.verdict is Verdict.QUIET and status.quiet == 0.0
    assert trk.longest_gap == 0.0 and trk.pauses == 0  # no use learned


def test_a_restart_between_two_samples_is_unknown_not_use() -> None:
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=100.0)
    for t in (200.0, 205.0):
        assert trk.observe(t, [counted(t, 0, value=9, started=1e9)]).verdict is not Verdict.TIMEOUT
    status = trk.observe(210.0, [counted(210.0, 0, value=0, started=1e9 + 200)])
    assert status.verdict is Verdict.IN_USE and status.reasons == (
        "db-1:5432 restarted since the last sample",
    )
    assert not status.used_late
    status = trk.observe(215.0, [counted(215.0, 0, value=1, started=1e9 + 200)])
    assert status.verdict is Verdict.TIMEOUT  # a login after the restart is use
    assert status.used_late == ("logins changed on db-1:5432",)


def test_a_client_using_the_old_user_only_between_invocations_raises_the_alarm() -> None:
    """Its logins fall between two invocations: each run past the timeout reports
    drain_timeout (its window cannot finish within the run), none pauses silently;
    once it stops, the drain finishes."""
    stops = 8  # its last login is before invocation 8

    def make(t: float, k: int) -> list[Reading]:
        return [counted(t, k, value=min(k, stops))]  # one login before each invocation

    schedule = Schedule(make)
    outcomes = schedule.until_done(14)
    # Invocations 0-3 saw their login before the timeout (3366 s): paused; 4-8 saw one
    # since the last run past it: the alarm; then the window runs 40 min from invocation 8.
    assert outcomes == ["paused"] * 4 + ["drain_timeout"] * 5 + ["paused", "done"]
    assert schedule.done_at == 8 * EVERY + STEP + 2400.0


def test_a_use_between_runs_past_the_timeout_does_not_stop_a_run_that_can_finish() -> None:
    """A client in use all along the first run (past the timeout: the alarm), and once
    more before the second: that run sees the use since the last run, but its window (5
    min) ends within it: done."""
    policy = DrainPolicy(client_ttl=TTL, quiet=300.0)

    def make(t: float, k: int) -> list[Reading]:
        return [counted(t, k, value=int(min(t, 800.0) // 100) if k == 0 else 99)]

    schedule = Schedule(make, policy=policy, timeout_at=100.0)
    assert schedule.until_done(3) == ["drain_timeout", "done"]
    assert schedule.done_at == EVERY + STEP + 300.0


def test_used_late_is_kept_for_the_run_and_ends_a_command_line_run_at_its_end() -> None:
    """Without a deadline (the command line), a use between runs past the timeout lets the
    run go on; if the window cannot finish by the run's end, TIMEOUT names that use."""
    first = DrainTracker(POLICY, switched_at=0.0, timeout_at=100.0)
    for t in (0.0, 70.0):
        first.observe(t, [counted(t, 0, value=1)])
    evidence = Evidence.from_dict(first.evidence("app_blue").to_dict())
    trk = DrainTracker(
        POLICY, switched_at=0.0, timeout_at=100.0, run_until=2000.0, evidence=evidence
    )
    status = trk.observe(1000.0, [counted(1000.0, 1, value=2)])
    assert status.verdict is Verdict.IN_USE  # not TIMEOUT: it may still finish
    assert status.used_late == ("the counters on db-1:5432 changed since the last run",)
    status = trk.observe(2000.0, [counted(2000.0, 1, value=2)])
    assert status.verdict is Verdict.TIMEOUT and status.used_late and not status.reasons


# -- 4. the evidence keeps the fleet's instances only -----------------------------------


def test_an_instance_the_fleet_no_longer_has_is_dropped_from_the_evidence() -> None:
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=1e4)
    three = [Reading(f"db-{i}:5432", NONE, {"logins": i}, started=1e9) for i in (1, 2, 3)]
    trk.observe(100.0, three)
    kept = Evidence.from_dict(trk.evidence("app_blue").to_dict())
    assert set(kept.counters) == {"db-1:5432", "db-2:5432", "db-3:5432"}
    # Next run: db-2 left the fleet (--forget-instance, an Aurora reader deleted);
    # db-3 is in it but cannot be reached: it keeps its digest and start time.
    later = DrainTracker(POLICY, switched_at=0.0, timeout_at=1e4, evidence=kept)
    later.observe(1000.0, [three[0], Reading("db-3:5432", error="connection refused")])
    again = later.evidence("app_blue")
    assert set(again.counters) == {"db-1:5432", "db-3:5432"}
    assert again.counters["db-3:5432"] == kept.counters["db-3:5432"]
    assert set(again.started) == {"db-1:5432", "db-3:5432"}


def test_the_evidence_of_a_fleet_that_keeps_changing_stays_small() -> None:
    """Aurora readers replaced run after run: only the current fleet is kept."""
    evidence: Evidence | None = None
    for run in range(40):
        fleet = [
            Reading(f"reader-{run}-{i}.cluster-x.rds.amazonaws.com:5432", NONE, {"c": 1})
            for i in range(3)
        ]
        trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=1e4, evidence=evidence)
        trk.observe(100.0 + run, fleet)
        evidence = Evidence.from_dict(trk.evidence("app_blue").to_dict())
    assert evidence is not None and len(evidence.counters) == 3


def test_held_sessions_do_not_change_what_is_kept() -> None:
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=1e4, terminate=True)
    idle = Sessions((SessionGroup("10.0.0.5", "pool", 1, idle_for=1e4),))
    trk.observe(100.0, [Reading("db-1:5432", idle, {})])
    assert trk.evidence("app_blue").counters == {"db-1:5432": UNCOUNTED}


# -- the words of the alarm ------------------------------------------------------------


def test_the_timeout_message_names_a_use_between_runs_or_a_window_that_cannot_carry_over() -> None:
    from credflip.rotation import messages

    late = DrainStatus(
        verdict=Verdict.QUIET,
        waited=5000.0,
        caches_in=0.0,
        quiet=800.0,
        needed_quiet=2400.0,
        done_in=1600.0,
        timeout_in=0.0,
        sessions=0,
        reasons=(),
        longest_gap=0.0,
        used_late=("the counters on db-1:5432 changed since the last run",),
    )
    text = str(messages.drain_timeout("app_blue", "prod", late, [], 865.0))
    assert "user 'app_blue' is still in use" in text
    assert "(the counters on db-1:5432 changed since the last run)" in text
    stuck = dataclasses.replace(
        late, used_late=(), stuck=("db-1:5432 restarted since the last sample",)
    )
    text = str(messages.drain_timeout("app_blue", "prod", stuck, [], 865.0))
    assert "user 'app_blue' shows no use for two quiet windows (1h20m)" in text, text
    assert "cannot carry over to the next (db-1:5432 restarted since the last sample)" in text
    assert "still in use" not in text
