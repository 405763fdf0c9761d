"""When the color about to be prepared must first be drained (the predrain), on a made-up
history: the rule, states written before it was recorded, the 4 KB shrink, and whom
`status` looks at meanwhile. No database.

The end-to-end runs are test_drain_e2e.py's (and test_drain_counters.py's,
test_unwatched_replicas.py's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from credflip.drain import Evidence, Reading
from credflip.engines import SessionGroup, Sessions, UserState
from credflip.layout import Color, Layout
from credflip.legacy import LegacyLog
from credflip.state import HistoryEntry, Phase, Rotation, State, predrain_due, save_state
from credflip.stores.base import MAX_VALUE_BYTES
from credflip.stores.sqlite import SqliteStore

BLUE, GREEN = Color.BLUE, Color.GREEN
T0 = 1_700_000_000.0
NOW = T0 + 9999.0


def done(left: Color, at: float) -> HistoryEntry:
    """A finished rotation away from *left* (drained and locked at *at*)."""
    return HistoryEntry(f"d{at:.0f}", "done", left, left.other, at - 60, at)


def rolled_back(
    left: Color, at: float, *, switched: bool = True, since: float | None = None
) -> HistoryEntry:
    """A rollback that left *left* (its rotation's new color) for *left.other*."""
    return HistoryEntry(
        f"r{at:.0f}",
        "rolled_back",
        left,
        left.other,
        at - 60,
        at,
        switched=switched,
        predrain_since=since,
    )


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param([], None, id="never-rotated"),
        pytest.param([done(GREEN, T0)], None, id="left-by-a-finished-rotation"),
        pytest.param([rolled_back(GREEN, T0, since=T0 + 1)], T0 + 1, id="switched-rollback"),
        pytest.param(
            [
                rolled_back(GREEN, T0, since=T0 + 1),
                rolled_back(GREEN, T0 + 50, switched=False, since=T0 + 1),
            ],
            T0 + 1,
            id="then-a-rollback-of-a-rotation-still-predraining",
        ),
        pytest.param(
            [
                rolled_back(GREEN, T0, since=T0 + 1),
                rolled_back(GREEN, T0 + 50, switched=False, since=None),
            ],
            None,
            id="then-a-rollback-after-prepare-changed-and-locked-it",
        ),
        pytest.param(
            [rolled_back(GREEN, T0, since=T0 + 1), done(BLUE, T0 + 50), done(GREEN, T0 + 99)],
            None,
            id="active-again-then-drained-by-a-finished-rotation",
        ),
        pytest.param([done(BLUE, T0)], NOW, id="left-active-the-pointer-moved-unrecorded"),
    ],
)
def test_the_newest_entry_says_whether_green_is_drained_first(
    history: list[HistoryEntry], expected: float | None
) -> None:
    assert predrain_due(history, GREEN, lambda: NOW) == expected


def legacy_entry(entry: HistoryEntry) -> dict[str, object]:
    """*entry* as a credflip that did not record ``predrain_since`` wrote it."""
    data = entry.to_dict()
    data.pop("predrain_since", None)
    return data


def state_json(history: list[dict[str, object]], current: dict[str, object] | None) -> str:
    return json.dumps(
        {
            "version": 1,
            "engine": "postgresql",
            "users": {"blue": "app", "green": "app_green"},
            "current": current,
            "history": history,
        }
    )


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param([rolled_back(BLUE, T0), rolled_back(GREEN, T0 + 5)], T0 + 5, id="switched"),
        pytest.param(
            [rolled_back(GREEN, T0), rolled_back(GREEN, T0 + 50, switched=False)],
            T0,
            id="unswitched-after-switched",
        ),
        pytest.param(
            [done(GREEN, T0), rolled_back(GREEN, T0 + 50, switched=False)],
            None,
            id="unswitched-after-done",
        ),
        pytest.param([rolled_back(GREEN, T0, switched=False)], T0, id="unswitched-alone"),
    ],
)
def test_a_history_written_before_predrain_since_reads_the_way_it_meant(
    history: list[HistoryEntry], expected: float | None
) -> None:
    state = State.from_json(state_json([legacy_entry(h) for h in history], None), where="test")
    assert predrain_due(state.history, GREEN, lambda: NOW) == expected
    # Written back, it says so itself: the older entries are no longer needed.
    again = State.from_json(state.to_json(), where="test")
    assert predrain_due(again.history[-1:], GREEN, lambda: NOW) == expected


def test_a_rotation_written_before_predrain_since_takes_it_from_the_history() -> None:
    rot = Rotation("r", BLUE, GREEN, Phase.PREPARE, T0 + 100).to_dict()
    rot.pop("predrain_since")
    text = state_json([legacy_entry(rolled_back(GREEN, T0))], rot)
    current = State.from_json(text, where="test").current
    assert current is not None and current.predrain_since == T0 and current.predraining
    # One already changing green (prepared) is not drained again.
    prepared = {**rot, "prepared": True}
    current = State.from_json(state_json([], prepared), where="test").current
    assert current is not None and current.predrain_since is None


def crowded_state(history: list[HistoryEntry], current: Rotation) -> State:
    """16 instances of 80-character names, each with legacy clients and evidence."""
    instances = [
        f"app-production-reader-{i:02d}.cluster-ro-c0abcdefghij.eu-west-1.rds.amazonaws.com:5432"
        for i in range(16)
    ]
    assert all(len(i) >= 78 for i in instances)
    log = LegacyLog()
    for n in range(3):
        readings = [
            Reading(
                inst,
                Sessions(
                    tuple(
                        SessionGroup(f"2001:db8::{i:x}:{j}", f"lambda-{'x' * 60}-{j}", 1)
                        for j in range(2)
                    )
                ),
                {"c": n},
                statements=tuple((f"SELECT {'c' * 90} /* {k} */", n + k) for k in range(5)),
            )
            for i, inst in enumerate(instances)
        ]
        log.update(T0 + n, readings)
    current.error = "drain timed out after 900s: " + "x" * 272
    current.evidence = Evidence(
        user="app_green",
        counters=dict.fromkeys(instances, "0123456789ab"),
        started=dict.fromkeys(instances, T0 - 86400),
        quiet_since=T0 + 1,
        sampled_at=T0 + 2,
    ).to_dict()
    current.legacy = log.to_list()
    return State(
        "postgresql",
        {BLUE: "app", GREEN: "app_green"},
        group="app_owner",
        current=current,
        history=history,
        instances=instances,
    )


def test_the_4_kb_shrink_keeps_the_newest_history_entry_and_the_predrain() -> None:
    """A rotation paused in its predrain with everything the state can hold: what is
    dropped to fit 4 KB is never what says that green must still be drained."""
    history = [done(BLUE if i % 2 else GREEN, T0 - 1000 + i) for i in range(19)]
    history.append(rolled_back(GREEN, T0, since=T0 + 1))
    current = Rotation(
        "r" * 12, BLUE, GREEN, Phase.PREPARE, T0 + 10, client_ttl=60.0, predrain_since=T0 + 1
    )
    state = crowded_state(history, current)
    text = state.to_json()
    assert len(text.encode()) <= MAX_VALUE_BYTES
    back = State.from_json(text, where="test")
    assert back.history[-1:] == history[-1:]
    assert back.current is not None and back.current.predraining
    assert back.current.predrain_since == T0 + 1
    # The rotation's own record shrank instead: its legacy clients are still counted.
    assert LegacyLog.from_list(back.current.legacy).count == 32
    assert state.history == history  # the state itself is left as it was


def test_after_an_abandoned_predrain_the_crowded_state_still_says_green_is_due() -> None:
    """The rotation was rolled back before its switch, and the next one is under way
    (and crowded): the entry of the rollback carries the predrain's instant on."""
    history = [rolled_back(GREEN, T0, since=T0 + 1)]
    history.append(rolled_back(GREEN, T0 + 20, switched=False, since=T0 + 1))
    history.append(rolled_back(GREEN, T0 + 40, switched=False, since=T0 + 1))
    current = Rotation("r" * 12, BLUE, GREEN, Phase.PREPARE, T0 + 50, predrain_since=T0 + 1)
    back = State.from_json(crowded_state(history, current).to_json(), where="test")
    assert predrain_due(back.history, GREEN, lambda: NOW) == T0 + 1


def test_status_during_a_predrain_looks_at_the_predrained_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prepare drains green (rolled back from) before it changes its password: `status`
    reports the counter gaps and the legacy clients of green's user, not blue's."""
    from credflip.commands import overview

    layout = Layout("predrain")
    store = SqliteStore(tmp_path / "params.db")
    store.put(layout.pointer, "blue")
    current = Rotation("r1", BLUE, GREEN, Phase.PREPARE, T0 + 10, predrain_since=T0 + 1)
    assert current.predraining
    save_state(
        store, layout, State("postgresql", {BLUE: "app", GREEN: "app_green"}, current=current)
    )
    watched: list[str] = []

    def report(*_args: object, watch: str) -> tuple[list[object], list[str], list[str]]:
        watched.append(watch)
        return [], [f"db-1:5432 counts no logins (for {watch})"], []

    class Admin:
        def user_state(self, user: str) -> UserState:
            return UserState(user, exists=True, can_login=True)

    monkeypatch.setattr(overview, "drain_report", report)
    seen = overview.status(store, layout, engine=Admin())  # type: ignore[arg-type]
    assert watched == ["app_green"] and seen.legacy_user == "app_green"
    assert seen.counter_gaps == ["db-1:5432 counts no logins (for app_green)"]
    # Once the predrain is over, the drain of the old user: blue's.
    current.predrained = True
    save_state(
        store, layout, State("postgresql", {BLUE: "app", GREEN: "app_green"}, current=current)
    )
    seen = overview.status(store, layout, engine=Admin())  # type: ignore[arg-type]
    assert watched[-1] == "app" and seen.legacy_user == "app"
    store.close()
