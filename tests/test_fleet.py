"""``status --all`` over many envs, and who ran each rotation (issue 22, points 1 and 5).

The envs' states are made by running credflip, on the local store and on SSM
(moto): a rotation done from the command line, one held in its drain by a
process of its own, one whose drain timed out on a client that never follows
the pointer, one whose verify failed (counting towards a halt), one outside its
rotation window; only the halt record is written by hand (halting itself is
tests/test_windows.py's).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from apps import App, make_app, serial
from clusters import PG_VERSIONS, Cluster, Clusters
from helpers import (
    FAST,
    FUNCTION_ARN,
    LambdaContext,
    count_calls,
    draining,
    rotate_args,
    rotate_process,
    wait_until,
    window_from_now,
)
from legacy_clients import Legacy

from credflip import commands
from credflip.actor import Actor, _identity, aws_identity, login_name
from credflip.aws_lambda import handler
from credflip.layout import Color, Layout
from credflip.lock import read_lock
from credflip.state import HistoryEntry, Phase, State, load_state
from credflip.stores.base import Store
from credflip.stores.ssm import SsmStore

#: What moto's STS answers for the tests' credentials.
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"


@pytest.fixture
def pg(clusters: Clusters) -> Cluster:
    return clusters.get(PG_VERSIONS[0])


@pytest.fixture
def prefix() -> str:
    return f"/fleet{serial()}"


def new_env(pg: Cluster, store: Store, prefix: str, name: str) -> tuple[App, Layout]:
    app = make_app(pg, rich=False)
    layout = Layout(name, prefix)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    return app, layout


def rotate_cli(cli: Any, app: App, store: Store, layout: Layout, *extra: str) -> Any:
    return cli(*rotate_args(app, store, layout, "--prefix", layout.prefix, *extra))


@contextlib.contextmanager
def rotating(app: App, store: Store, layout: Layout) -> Iterator[subprocess.Popen[str]]:
    """``credflip rotate`` in a process of its own, held in its drain by a long quiet
    window; interrupted (Ctrl-C) at the end, which releases its lock."""
    proc = rotate_process(app, store, layout, "--client-ttl", "200ms", "--quiet", "1h")
    try:
        live = lambda: draining(store, layout) and proc.poll() is None  # noqa: E731
        wait_until(live, "drain of the rotation in its own process", within=60)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        resume = "credflip: interrupted; run the same command again to resume\n"
        assert proc.returncode == 130 and err.endswith(resume), err


def run(cli: Any, store: Store, prefix: str, *extra: str) -> Any:
    return cli("status", "--all", "--prefix", prefix, "--store", store.url, *extra)


def test_status_all_over_six_envs_in_six_states(
    pg: Cluster, store: Store, prefix: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    never_app, never = new_env(pg, store, prefix, "never")
    outside = rotate_cli(cli, never_app, store, never, "--window", window_from_now(3, 4))
    assert outside.code == 0 and "outside its rotation window" in outside.out, outside.err
    idle_app, idle = new_env(pg, store, prefix, "idle")
    assert rotate_cli(cli, idle_app, store, idle, *FAST).code == 0
    busy_app, busy = new_env(pg, store, prefix, "busy")
    with rotating(busy_app, store, busy) as proc:
        healthy = run(cli, store, prefix, "--json")
        assert healthy.code == 0, healthy.err
        rows = {r["env"]: r for r in json.loads(healthy.out)["envs"]}
        assert sorted(rows) == ["busy", "idle", "never"]
        assert rows["busy"]["phase"] == "drain" and rows["busy"]["lock"]["pid"] == proc.pid
        assert rows["busy"]["drain"]["waiting"] in ("cache wait", "no sample recorded yet")
        legacy_app, legacy = new_env(pg, store, prefix, "legacy")
        with Legacy(legacy_app, legacy_app.url, 0.3):
            timed_out = rotate_cli(cli, legacy_app, store, legacy, *FAST, "--drain-timeout", "1s")
        assert timed_out.code == 4, timed_out.err
        broken_app, broken = new_env(pg, store, prefix, "broken")
        probe = ("--probe", "SELECT count(*) FROM no_such_table", "--halt-after", "3")
        window = ("--window", window_from_now(-1, 2))
        assert rotate_cli(cli, broken_app, store, broken, *FAST, *probe, *window).code == 1
        _halted_app, halted = new_env(pg, store, prefix, "halted")
        reason = "failed in verify: the new URL does not connect"
        record = {"since": time.time() - 3600, "reason": reason, "failures": 3}
        store.put(halted.halted, json.dumps(record))
        fleet = listed_once(store, prefix, monkeypatch)
        text = run(cli, store, prefix, "--min-interval", "30d")
        as_json = run(cli, store, prefix, "--json")
    assert read_lock(store, busy) is None  # the interrupted run released it
    rows = {r.env: r for r in fleet.envs}
    assert list(rows) == ["broken", "busy", "halted", "idle", "legacy", "never"]
    assert {e: r.phase for e, r in rows.items()} == {
        "broken": "paused",
        "busy": "drain",
        "halted": "halted",
        "idle": "idle",
        "legacy": "paused",
        "never": "idle",
    }
    assert [r.env for r in fleet.envs if not r.healthy] == ["broken", "halted", "legacy"]
    check_rows(rows, store, proc.pid)
    check_text(text, prefix, proc.pid)
    assert as_json.code == 5
    data = json.loads(as_json.out)
    assert data["unhealthy"] == ["broken", "halted", "legacy"]
    assert [e["phase"] for e in data["envs"]] == [r.phase for r in fleet.envs]
    check_json_schedule({e["env"]: e for e in data["envs"]}, data["checked_at"])
    check_schedule_finishes(legacy_app, store, legacy, cli, monkeypatch)
    assert never.env in text.out


def listed_once(store: Store, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``status_all``, with every read by name refused: it lists the prefix, in one
    SQLite query or in pages of ten plain values on SSM, not a call per env."""

    def by_name(_names: Any) -> dict[str, str]:
        raise AssertionError("status --all read a parameter by name")

    monkeypatch.setattr(store, "get_many", by_name)
    calls = count_calls(store) if isinstance(store, SsmStore) else []
    fleet = commands.status_all(store, prefix=prefix)
    calls = list(calls)
    monkeypatch.undo()
    if isinstance(store, SsmStore):
        plain = store.get_path(prefix)
        assert len(plain) >= 12  # a pointer and a state per env, a lock, a halt record
        assert set(calls) == {"GetParametersByPath"}
        assert len(calls) <= len(plain) // 10 + 1 < len(fleet.envs), calls
        # No SecureString came back, not even encrypted: nothing asked for one.
        assert not [name for name in plain if name.endswith("-db-url")]
    return fleet


def check_rows(rows: dict[str, Any], store: Store, pid: int) -> None:
    me = f"{login_name()}@"
    idle = rows["idle"]
    assert idle.active is Color.GREEN and idle.active_user.endswith("_green")
    assert idle.last.result == "done" and idle.last.by.via == "person"
    assert idle.last.by.user.startswith(me)
    assert idle.last.by.arn == (MOTO_ARN if isinstance(store, SsmStore) else None)
    assert rows["never"].last is None and rows["never"].active is Color.BLUE
    busy = rows["busy"]
    assert busy.lock.pid == pid and busy.lock.purpose == "rotate" and not busy.lock_stale
    assert busy.rotation.by.via == "person" and busy.healthy
    assert busy.drain.earliest_retire > time.time() + 3000  # an hour's quiet window
    legacy = rows["legacy"]
    assert legacy.rotation.phase is Phase.DRAIN and legacy.rotation.error_kind == "drain_timeout"
    assert legacy.drain.legacy.count >= 1 and legacy.drain.user != legacy.active_user
    assert legacy.drain.waiting in (f"use of {legacy.drain.user}", "quiet window")
    assert legacy.problems[0].startswith("drain timeout: ")
    broken = rows["broken"]
    assert broken.rotation.error_kind == "failed"
    assert broken.problems[0].startswith(f"last run failed (resumes in {broken.rotation.phase}): ")
    assert "no_such_table" in broken.problems[0]
    assert broken.failures == 1 and broken.window is not None and broken.window["open"] is True
    halted = rows["halted"]
    assert halted.halt.failures == 3 and halted.halt.reason.startswith("failed in verify")
    assert "after 3 failed rotation(s)" in halted.problems[0] and halted.failures == 0
    never = rows["never"]
    assert never.healthy and never.window is not None and never.window["open"] is False
    assert idle.window is None and idle.failures == 0


def check_json_schedule(envs: dict[str, Any], now: float) -> None:
    """The failures in a row, and the window (open; closed: when it opens next) in JSON."""
    assert envs["broken"]["failures"] == 1 and envs["idle"]["failures"] == 0
    assert envs["broken"]["window"]["open"] is True and envs["idle"]["window"] is None
    window = envs["never"]["window"]
    assert window["spec"].startswith("daily ") and window["spec"].endswith(" UTC")
    assert window["open"] is False
    # Opens about three hours after the test wrote it (whole minutes; a loaded machine).
    assert 2.5 * 3600 < window["next_opening"] - now <= 3 * 3600, window


def check_text(text: Any, prefix: str, pid: int) -> None:
    assert text.code == 5
    lines = text.out.splitlines()
    assert lines[0].startswith(f"6 env(s) under {prefix} in ") and ", 3 unhealthy" in lines[0]
    assert lines[1].split() == [
        *("ENV", "PHASE", "ACTIVE", "LAST", "ROTATION", "NEXT", "DUE"),
        *("WINDOW", "DRAIN", "LOCK", "HEALTH"),
    ]
    by_env = {line.split()[0]: line for line in lines[2:8]}
    assert "paused in prepare" in by_env["broken"] or "paused in verify" in by_env["broken"]
    assert by_env["busy"].split()[1] == "drain" and " under way " in by_env["busy"]
    assert f"@{socket.gethostname()} pid {pid}, " in by_env["busy"]
    assert re.search(r" in (29d23h|30d00h) ", by_env["idle"]) and by_env["idle"].endswith(" ok")
    assert f"by {login_name()}@" in by_env["idle"]
    assert by_env["legacy"].endswith(" drain timeout") and re.search(
        r", \d+ legacy clients?", by_env["legacy"]
    )
    assert by_env["halted"].endswith(" halted") and by_env["never"].split()[4] == "never"
    assert by_env["broken"].endswith(" failing (1)") and " open " in by_env["broken"]
    # Due since it was adopted, but its window opens in about three hours.
    assert re.search(r" in [23]h\d\dm +opens in [23]h\d\dm ", by_env["never"]), by_env["never"]
    assert by_env["idle"].split()[-4] == "-"  # no window
    assert any(line.startswith("legacy: legacy clients of ") for line in lines[8:])
    closed = [line for line in lines[8:] if line.startswith("never: rotation window daily ")]
    assert len(closed) == 1 and " UTC (closed; the next opens " in closed[0], lines
    assert text.err.strip().splitlines()[-1] == (
        f"credflip: error: 3 of 6 envs under {prefix} unhealthy: broken (failing (1)), "
        f"halted (halted), legacy (drain timeout)"
    )


def check_schedule_finishes(
    app: App, store: Store, layout: Layout, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduled rotator finishes what a person started: the history says both."""
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    event = {"env": layout.env, "prefix": layout.prefix, "store": store.url, "margin": "1s"}
    result = handler({**event, "client_ttl": "200ms", "quiet": "200ms"}, LambdaContext(60))
    assert result["status"] == "done", result
    entry = load_state(store, layout).history[-1]
    assert entry.by is not None and entry.by.via == "person"
    arn = MOTO_ARN if isinstance(store, SsmStore) else FUNCTION_ARN
    assert entry.done_by == Actor("schedule", None, arn)
    shown = cli("history", "--env", layout.env, "--prefix", layout.prefix, "--store", store.url)
    assert shown.code == 0 and f", finished by schedule {arn.split(':', 5)[-1]}" in shown.out


# -- without a database ------------------------------------------------------------


def test_get_path_lists_a_folder_and_leaves_secrets_out(store: Store) -> None:
    top = f"/list{serial()}"
    store.put(f"{top}/a/pointer", "blue")
    store.put(f"{top}/a/deep/er/state", "{}")
    store.put(f"{top}/a/blue/writer-db-url", "postgresql://u:pw@h/d", secure=True)
    store.put(f"{top}x/not/mine", "x")  # a sibling whose name starts the same
    assert store.get_path(top) == {f"{top}/a/pointer": "blue", f"{top}/a/deep/er/state": "{}"}
    assert store.get_path(top + "/a/")[f"{top}/a/pointer"] == "blue"
    assert store.get_path(top, secure=True)[f"{top}/a/blue/writer-db-url"].endswith("@h/d")
    for n in range(25):
        store.put(f"{top}/many/p{n:02d}", str(n))
    calls = count_calls(store) if isinstance(store, SsmStore) else []
    assert len(store.get_path(f"{top}/many")) == 25
    assert calls in ([], ["GetParametersByPath"] * 3)  # ten values a page


def test_nothing_under_the_prefix_and_what_is_not_an_env(store: Store, cli: Any) -> None:
    top = f"/empty{serial()}"
    empty = run(cli, store, top)
    assert empty.code == 0 and f"no env under {top}" in empty.out
    store.put(Layout("theirs", top).pointer, "green")  # read by apps, not managed by credflip
    store.put(Layout("torn", top).state, "{not json")
    store.put(f"{top}/nested/prod/rotation", "{}")  # another prefix's env, not one of these
    fleet = commands.status_all(store, prefix=top)
    assert [(r.env, r.phase, r.healthy) for r in fleet.envs] == [
        ("theirs", "unmanaged", True),
        ("torn", "damaged", False),
    ]
    assert "is not valid credflip state" in fleet.envs[1].problems[0]


def test_status_needs_an_env_or_all(
    sqlite_store: Store, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = ("--store", sqlite_store.url)
    assert cli("status", *st).code == 2
    both = cli("status", "--all", "--env", "prod", *st)
    assert both.code == 2 and "leave out --env" in both.err
    monkeypatch.setenv("CREDFLIP_ENV", "prod")  # from the environment: --all wins
    assert cli("status", "--all", *st).code == 0


def test_the_aws_identity_is_asked_once_per_process(
    moto_endpoint: str, sqlite_store: Store
) -> None:
    _identity.cache_clear()
    ssm = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    assert aws_identity(ssm) == MOTO_ARN and aws_identity(ssm) == MOTO_ARN
    assert _identity.cache_info().misses == 1
    assert aws_identity(sqlite_store) is None
    # STS out of reach: one short try, then unknown; the run goes on.
    away = SsmStore(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    started = time.monotonic()
    assert aws_identity(away) is None and time.monotonic() - started < 5
    assert _identity.cache_info().misses == 2


def test_a_typical_state_keeps_who_ran_each_rotation() -> None:
    """A year of monthly rotations by the scheduled rotator's role: its ARN is written
    once, the next entries say "the same"; a person's rollback names them."""
    role = "credflip-rotator-prod-RotatorRole-1ABCDEFGHIJK/credflip-rotator-prod"
    schedule = Actor("schedule", None, f"arn:aws:sts::123456789012:assumed-role/{role}")
    person = Actor("person", "alice@ops-laptop-17", "arn:aws:sts::123456789012:user/alice")
    t0 = 1_800_000_000.123
    timings = {"prepare": 0.123, "verify": 0.456, "switch": 0.012, "drain": 2461.2, "retire": 0.3}
    history = [
        HistoryEntry(f"20270101T000000Z-{i:04x}", "done", Color.BLUE, Color.GREEN, t0, t0 + 2500)
        for i in range(20)
    ]
    for entry in history:
        entry.timings, entry.drain_seconds, entry.by = dict(timings), 2461.2, schedule
    history[-1].result, history[-1].by = "rolled_back", person
    state = State("postgresql", {Color.BLUE: "app", Color.GREEN: "app_green"}, history=history)
    text = state.to_json()
    kept = State.from_json(text, where="test").history
    assert len(kept) >= 12 and text.count(role) == 1
    assert kept[-1].by == person and all(e.by == schedule for e in kept[:-1])
    assert Actor.from_dict({"via": "robot"}) is None and Actor.from_dict(None) is None
    assert person.short() == "alice@ops-laptop-17" and schedule.short().startswith("schedule ")
