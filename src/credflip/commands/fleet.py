"""``status --all``: every env under a prefix, one row each, from one listing of the store.

The rows come from the plain values alone (pointer, state, lock, halt record):
one ``GetParametersByPath`` walk on SSM (SecureStrings left out, nothing
decrypted), one query on SQLite, whatever the number of envs. No database is
asked: the phase, the drain and the legacy clients are what the last run
recorded. An env is *unhealthy* when it is halted, its last run failed (or runs
failed in a row), or its drain timed out (or is blocked); the command line then
exits 5. An env with a rotation window shows when it next opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..actor import Actor
from ..drain import Evidence
from ..errors import CredflipError, UsageError
from ..halt import Halt, in_a_row, read_halt
from ..layout import DEFAULT_PREFIX, Color, Layout, validate_prefix
from ..legacy import LegacyLog, LegacyReport
from ..lock import LockInfo
from ..rotation.watch import drain_policy
from ..state import HistoryEntry, Phase, Rotation, State
from ..stores.base import Store
from ..windows import parse_windows
from .admin import describe_time
from .overview import drained_color, earliest_retire, window_dict

__all__ = ["DrainView", "EnvRow", "FleetStatus", "status_all"]


@dataclass(frozen=True)
class DrainView:
    """What the env's drain waits on, as its last run recorded it."""

    #: ``cache wait``, ``use of app`` (seen at the last sample recorded), ``quiet window``,
    #: or ``no sample recorded yet``.
    waiting: str
    #: The user drained (the old one; while prepare drains a rolled-back color, the new one).
    user: str
    #: The earliest the old user can be retired, if nothing uses it (wall clock).
    earliest_retire: float | None
    #: When the last run last sampled, and the old user's last use it saw.
    sampled_at: float | None
    last_use: float | None
    legacy: LegacyReport = field(default_factory=LegacyReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "user": self.user,
            "earliest_retire": self.earliest_retire,
            "sampled_at": self.sampled_at,
            "last_use": self.last_use,
            "legacy_count": self.legacy.count,
            "legacy_clients": self.legacy.to_json(),
        }


@dataclass(frozen=True)
class EnvRow:
    """One env in ``status --all``."""

    env: str
    #: ``idle``, ``starting``, ``prepare`` … ``retire`` (a run holds the lock), ``paused`` (a
    #: rotation under way that no run holds), ``rollback``, ``halted``, ``unmanaged`` (a
    #: pointer but no credflip state) or ``damaged``.
    phase: str
    active: Color | None = None
    active_user: str | None = None
    rotation: Rotation | None = None
    last: HistoryEntry | None = None
    #: When the next scheduled rotation may start (``min_interval`` after the last, and
    #: inside the env's rotation window when it has one).
    next_due: float | None = None
    drain: DrainView | None = None
    lock: LockInfo | None = None
    #: The lock's holder is certainly gone (its expiry passed, or its process here died).
    lock_stale: bool = False
    halt: Halt | None = None
    #: Failed rotate runs in a row, counted while halting is on (:mod:`credflip.halt`).
    failures: int = 0
    #: The window of the env's rotator (``/db/{env}/rotation-window``), as
    #: :func:`~credflip.commands.window_dict` shows it: ``{"spec", "open", "next_opening"}``.
    window: dict[str, Any] | None = None
    #: Why the env is unhealthy, one phrase each (empty: healthy).
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; no secret is among what it reads."""
        rot, last, lock = self.rotation, self.last, self.lock
        return {
            "env": self.env,
            "healthy": self.healthy,
            "problems": list(self.problems),
            "phase": self.phase,
            "active": self.active.value if self.active else None,
            "active_user": self.active_user,
            "rotation": None if rot is None else _rotation_dict(rot),
            "last_rotation": None if last is None else _last_dict(last),
            "next_due": self.next_due,
            "drain": self.drain.to_dict() if self.drain else None,
            "lock": None
            if lock is None
            else {
                "owner": lock.owner,
                "host": lock.host,
                "pid": lock.pid,
                "purpose": lock.purpose,
                "started_at": lock.started_at,
                "expires_at": lock.expires_at,
                "stale": self.lock_stale,
            },
            "halted": self.halt.to_dict() if self.halt else None,
            "failures": self.failures,
            "window": self.window,
        }


def _rotation_dict(rot: Rotation) -> dict[str, Any]:
    return {
        "id": rot.id,
        "from_color": rot.from_color.value,
        "to_color": rot.to_color.value,
        "phase": rot.phase.value,
        "started_at": rot.started_at,
        "switched_at": rot.switched_at,
        "error": rot.error,
        "error_kind": rot.error_kind,
        "by": _actor(rot.by),
    }


def _last_dict(last: HistoryEntry) -> dict[str, Any]:
    return {
        "id": last.id,
        "result": last.result,
        "finished_at": last.finished_at,
        "by": _actor(last.by),
        "done_by": _actor(last.done_by),
    }


def _actor(actor: Actor | None) -> dict[str, str] | None:
    return actor.to_dict() if actor else None


@dataclass(frozen=True)
class FleetStatus:
    """Every env under a prefix, as ``status --all`` shows them."""

    store: str
    prefix: str
    checked_at: float
    envs: list[EnvRow]
    min_interval: float | None = None

    @property
    def healthy(self) -> bool:
        return all(row.healthy for row in self.envs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "prefix": self.prefix,
            "checked_at": self.checked_at,
            "min_interval": self.min_interval,
            "healthy": self.healthy,
            "unhealthy": [row.env for row in self.envs if not row.healthy],
            "envs": [row.to_dict() for row in self.envs],
        }


def status_all(
    store: Store,
    *,
    prefix: str = DEFAULT_PREFIX,
    min_interval: float | None = None,
    clock: Callable[[], float] = time.time,
) -> FleetStatus:
    """Every env under *prefix*: one listing of the store's plain values, one row each.

    *min_interval* (the scheduled rotator's) gives each idle env its next due time.
    """
    prefix = validate_prefix(prefix)
    values = store.get_path(prefix)
    now = clock()
    rows = [
        env_row(Layout(env, prefix), values, now, min_interval) for env in _envs(values, prefix)
    ]
    return FleetStatus(store.url, prefix, now, rows, min_interval)


def _envs(values: dict[str, str], prefix: str) -> list[str]:
    """The envs under *prefix* with a pointer or a state (sorted)."""
    found = set()
    for name in values:
        env, _, rest = name[len(prefix) + 1 :].partition("/")
        if rest in ("rotation", "blue-green-env"):
            try:
                found.add(Layout(env, prefix).env)
            except CredflipError:
                continue  # not a name credflip would give an env
    return sorted(found)


def env_row(
    layout: Layout, values: dict[str, str], now: float, min_interval: float | None
) -> EnvRow:
    """One env's row from *values* (a listing that holds its plain parameters)."""
    lock_text = values.get(layout.lock)
    lock = None if lock_text is None else LockInfo.from_json(lock_text)
    halt = read_halt(values, layout)
    spec = values.get(layout.window)
    window = None if spec is None else window_dict(spec, now)
    stale = bool(lock and lock.is_stale_here())
    base = EnvRow(layout.env, "", lock=lock, lock_stale=stale, halt=halt, window=window)
    halted = (_halted_problem(halt, layout.env),) if halt else ()
    text = values.get(layout.state)
    if text is None:
        return replace(base, phase="halted" if halt else "unmanaged", problems=halted)
    try:
        state = State.from_json(text, where=layout.state)
        active = Color.parse(values.get(layout.pointer, ""), where=layout.pointer)
    except CredflipError as exc:
        return replace(base, phase="damaged", problems=(*halted, str(exc)))
    rot = state.current
    return replace(
        base,
        phase="halted" if halt else _phase(rot, lock if not base.lock_stale else None),
        active=active,
        active_user=state.users.get(active),
        rotation=rot,
        last=state.last,
        next_due=None if halt else _in_window(_next_due(state, min_interval), spec, now),
        drain=_drain(rot, state, active, now),
        failures=state.failures,
        problems=(*halted, *_rotation_problems(rot)) or _failing(state.failures),
    )


def _phase(rot: Rotation | None, lock: LockInfo | None) -> str:
    """Where the env is: the rotation's phase while a run holds it, else paused or idle
    (a lock without a rotation: a rotation starting, or a rollback)."""
    if rot is None:
        if lock is None:
            return "idle"
        return "starting" if lock.purpose == "rotate" else lock.purpose
    if lock is None:
        return "paused"
    return rot.phase.value if lock.purpose == "rotate" else lock.purpose


def _halted_problem(halt: Halt, env: str) -> str:
    return (
        f"halted since {describe_time(halt.since)} after {halt.failures} failed rotation(s): "
        f"{halt.reason}; 'credflip unhalt --env {env}' lifts it"
    )


def _rotation_problems(rot: Rotation | None) -> tuple[str, ...]:
    if rot is None or not rot.error:
        return ()
    if rot.error_kind == "drain_timeout":
        return (f"drain timeout: {rot.error}",)
    return (f"last run failed (resumes in {rot.phase.value}): {rot.error}",)


def _failing(failures: int) -> tuple[str, ...]:
    """A count of failed runs that recorded no error in a rotation (one that failed before
    it began one) is a problem of its own."""
    return (f"failing: {in_a_row(failures)}",) if failures else ()


def _next_due(state: State, min_interval: float | None) -> float | None:
    """When the schedule starts the next rotation: *min_interval* after the last one
    finished (now when there is none); None under way or without *min_interval*."""
    if min_interval is None or state.current is not None:
        return None
    last = state.last
    return state.managed_since if last is None else last.finished_at + min_interval


def _in_window(due: float | None, spec: str | None, now: float) -> float | None:
    """*due*, or when the env's window next opens after it (and after *now*); a window
    this credflip does not read moves nothing."""
    if due is None or spec is None:
        return due
    try:
        windows = parse_windows(spec)
    except UsageError:
        return due
    return windows.next_opening(max(due, now))


def _drain(rot: Rotation | None, state: State, active: Color, now: float) -> DrainView | None:
    """What the drain waits on, once the rotation switched (or predrains)."""
    if rot is None or not (rot.predraining or rot.phase in (Phase.DRAIN, Phase.RETIRE)):
        return None
    evidence = Evidence.from_dict(rot.evidence)
    user = state.users.get(drained_color(rot, active), "?")
    return DrainView(
        waiting=_waiting(rot, evidence, user, now),
        user=user,
        earliest_retire=earliest_retire(rot),
        sampled_at=evidence.sampled_at,
        last_use=evidence.last_use,
        legacy=LegacyLog.from_list(rot.legacy).report(),
    )


def _waiting(rot: Rotation, evidence: Evidence, user: str, now: float) -> str:
    """``cache wait``, ``use of USER`` (the last sample recorded saw it), ``quiet window``,
    or ``no sample recorded yet`` (a run records its samples every 30 s)."""
    switched = None if rot.predraining else rot.switched_at
    caches_out = None if switched is None else switched + drain_policy(rot).cache_wait
    at = evidence.sampled_at
    if caches_out is not None and (at if at is not None else now) < caches_out:
        return "cache wait"
    if at is None:
        return "no sample recorded yet"
    return f"use of {user}" if evidence.quiet_since is None else "quiet window"
