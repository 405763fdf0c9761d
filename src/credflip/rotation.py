"""A rotation: prepare, verify, switch, drain, retire, done.

Each phase boundary is written to ``/db/{env}/rotation`` before the next
phase starts, so a rotation that stops (crash, drain timeout, Lambda time
limit) resumes where it stopped. Throughout, the color the pointer names has
URLs that connect: the active user is never touched, and the pointer only
moves to URLs that were just proven to work.

This module prints nothing: progress goes to an ``on_event`` callback.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .engines import Engine, Sessions, engine_for
from .errors import (
    ConfigurationError,
    CredflipError,
    DrainTimeout,
    RotationError,
    UsageError,
)
from .layout import ROLES, TTL_JITTER, Color, Layout, Role
from .state import HistoryEntry, Phase, Rotation, State, hold_lock, load_state, save_state
from .stores.base import Store
from .urls import DbUrl, scrub

__all__ = [
    "DrainProgress",
    "Event",
    "Notice",
    "PhaseFinished",
    "PhaseStarted",
    "RollbackResult",
    "RotateOptions",
    "RotationResult",
    "new_password",
    "read_pointer",
    "rollback",
    "rotate",
]

RetireMode = Literal["lock", "drop"]


@dataclass(frozen=True, kw_only=True)
class RotateOptions:
    """How a rotation waits and retires."""

    #: The clients' cache TTL; the drain waits for it (plus jitter) after the switch.
    client_ttl: float = 60.0
    #: How long the drain may wait in this run before it stops (or terminates).
    drain_timeout: float = 900.0
    #: End the old user's sessions when the drain times out, instead of stopping.
    terminate: bool = False
    #: Lock the old user (reversible) or drop it.
    retire: RetireMode = "lock"
    #: Extra SQL that must succeed for the new URLs, besides ``SELECT 1``.
    probe: str | None = None
    #: Seconds between two samples of the old user's sessions.
    sample_interval: float = 0.2
    #: A ``time.monotonic()`` instant by which to stop safely (for Lambda).
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.client_ttl < 0 or self.drain_timeout < 0:
            raise UsageError("--client-ttl and --drain-timeout must not be negative")
        if self.retire not in ("lock", "drop"):
            raise UsageError(f"invalid --retire {self.retire!r}: use lock or drop")
        if not 0 < self.sample_interval <= 0.25:
            raise UsageError("the drain samples sessions at least 4 times a second")


@dataclass(frozen=True)
class PhaseStarted:
    """A phase begins."""

    phase: Phase
    rotation_id: str
    from_color: Color
    to_color: Color
    resumed: bool = False


@dataclass(frozen=True)
class PhaseFinished:
    """A phase ended and the next one is recorded in the store."""

    phase: Phase
    seconds: float


@dataclass(frozen=True)
class DrainProgress:
    """One sample of the drain."""

    user: str
    sessions: Sessions
    waited: float
    min_wait: float
    quiet: float
    needed_quiet: float
    timeout_in: float


@dataclass(frozen=True)
class Notice:
    """Something the operator should know."""

    message: str


Event = PhaseStarted | PhaseFinished | DrainProgress | Notice


@dataclass(frozen=True)
class RotationResult:
    """What a call to :func:`rotate` did."""

    id: str
    from_color: Color
    to_color: Color
    from_user: str
    to_user: str
    finished: bool
    resumed: bool
    timings: dict[str, float] = field(default_factory=dict)
    drain_seconds: float | None = None
    terminated: int = 0
    stopped_in: Phase | None = None


@dataclass(frozen=True)
class RollbackResult:
    """What a call to :func:`rollback` did."""

    color: Color
    user: str
    flipped: bool
    unlocked: bool


def new_password() -> str:
    """A fresh password: 192 random bits, URL-safe characters."""
    return secrets.token_urlsafe(24)


def read_pointer(store: Store, layout: Layout) -> Color:
    """The active color, or an error naming the pointer parameter."""
    value = store.get(layout.pointer)
    if value is None:
        raise ConfigurationError(
            f"pointer {layout.pointer} is missing: run 'credflip init --env {layout.env}' or "
            f"restore it to the color whose URLs work"
        )
    return Color.parse(value, where=f"pointer {layout.pointer}")


def read_urls(store: Store, layout: Layout, color: Color) -> dict[Role, DbUrl]:
    """Both URLs of *color* from the store; raise when one is missing."""
    names = {role: layout.url(color, role) for role in ROLES}
    values = store.get_many(list(names.values()))
    out: dict[Role, DbUrl] = {}
    for role, name in names.items():
        if name not in values:
            raise ConfigurationError(
                f"{name} is missing: run 'credflip rotate' to write it, or set it by hand"
            )
        out[role] = DbUrl.parse(values[name], what=name)
    return out


def _emit(on_event: Callable[[Event], None] | None, event: Event) -> None:
    if on_event is not None:
        on_event(event)


class _Run:
    """One invocation of :func:`rotate`, holding the lock."""

    def __init__(
        self,
        store: Store,
        layout: Layout,
        engine: Engine,
        state: State,
        options: RotateOptions,
        on_event: Callable[[Event], None] | None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.engine = engine
        self.state = state
        self.options = options
        self.on_event = on_event
        self.secrets: list[str] = []

    @property
    def rot(self) -> Rotation:
        assert self.state.current is not None  # noqa: S101 - set before any phase runs
        return self.state.current

    def user(self, color: Color) -> str:
        return self.state.users[color]

    def notice(self, message: str) -> None:
        _emit(self.on_event, Notice(scrub(message, self.secrets)))

    def run(self, resumed: bool) -> RotationResult:
        """Run phases from the recorded one until DONE or a safe stop."""
        first = True
        while True:
            phase = self.rot.phase
            deadline = self.options.deadline
            if deadline is not None and phase is not Phase.DONE and time.monotonic() >= deadline:
                self.notice(f"stopping before {phase} to respect the deadline; run again to resume")
                return self.result(finished=False, resumed=resumed, stopped_in=phase)
            _emit(
                self.on_event,
                PhaseStarted(
                    phase, self.rot.id, self.rot.from_color, self.rot.to_color, resumed and first
                ),
            )
            first = False
            started = time.monotonic()
            try:
                finished = getattr(self, f"_{phase.value}")()
            except CredflipError as exc:
                self.rot.error = scrub(str(exc), self.secrets)[:300]
                if phase is Phase.VERIFY:
                    # Nothing was switched: redo prepare on the next run
                    # rather than re-testing URLs that failed.
                    self.rot.phase = Phase.PREPARE
                # Best effort: when the store itself failed, the phase recorded
                # at the last boundary is still a safe place to resume from.
                with contextlib.suppress(CredflipError):
                    save_state(self.store, self.layout, self.state)
                raise
            elapsed = time.monotonic() - started
            self.rot.timings[phase.value] = self.rot.timings.get(phase.value, 0.0) + elapsed
            if phase is Phase.DONE:
                _emit(self.on_event, PhaseFinished(phase, elapsed))
                return self.result(finished=True, resumed=resumed)
            if not finished:
                save_state(self.store, self.layout, self.state)
                return self.result(finished=False, resumed=resumed, stopped_in=phase)
            self.rot.phase = phase.next
            self.rot.error = None
            save_state(self.store, self.layout, self.state)
            _emit(self.on_event, PhaseFinished(phase, elapsed))

    def result(
        self, *, finished: bool, resumed: bool, stopped_in: Phase | None = None
    ) -> RotationResult:
        rot = self.rot
        return RotationResult(
            id=rot.id,
            from_color=rot.from_color,
            to_color=rot.to_color,
            from_user=self.user(rot.from_color),
            to_user=self.user(rot.to_color),
            finished=finished,
            resumed=resumed,
            timings=dict(rot.timings),
            drain_seconds=rot.drain_seconds,
            terminated=rot.terminated,
            stopped_in=stopped_in,
        )

    # -- phases: each returns True when done, False to stop resumably -------

    def _prepare(self) -> bool:
        pointer = read_pointer(self.store, self.layout)
        if pointer is not self.rot.from_color:
            raise RotationError(
                f"the pointer names {pointer} but this rotation started from "
                f"{self.rot.from_color}: it was changed outside credflip; run 'credflip "
                f"rollback --env {self.layout.env}' to abandon this rotation"
            )
        active, target = self.user(self.rot.from_color), self.user(self.rot.to_color)
        urls = read_urls(self.store, self.layout, self.rot.from_color)
        password = new_password()
        self.secrets.append(password)
        self.engine.prepare_user(target, password, like=active, group=self.state.group)
        for role, url in urls.items():
            fresh = url.with_credentials(target, password)
            self.store.put(self.layout.url(self.rot.to_color, role), fresh.secret, secure=True)
        return True

    def _verify(self) -> bool:
        for role, url in read_urls(self.store, self.layout, self.rot.to_color).items():
            if url.user != self.user(self.rot.to_color):
                raise RotationError(
                    f"{self.layout.url(self.rot.to_color, role)} logs in as {url.user!r}, not "
                    f"{self.user(self.rot.to_color)!r}; run 'credflip rotate' again"
                )
            try:
                self.engine.verify(url, probe=self.options.probe)
            except CredflipError as exc:
                raise RotationError(
                    f"verify failed for the {self.rot.to_color} {role} URL ({url}): {exc}; the "
                    f"pointer still names {self.rot.from_color}; fix the cause and run "
                    f"'credflip rotate' again, or 'credflip rollback'"
                ) from exc
        return True

    def _switch(self) -> bool:
        self.store.put(self.layout.pointer, self.rot.to_color.value, secure=False)
        self.rot.switched_at = time.time()
        return True

    def _drain(self) -> bool:
        opts = self.options
        old = self.user(self.rot.from_color)
        now = time.monotonic()
        switched_at = self.rot.switched_at or time.time()
        # Persisted times are wall-clock; translate once, then use monotonic.
        since_switch = max(0.0, time.time() - switched_at)
        switched = now - since_switch
        min_wait = opts.client_ttl * (1 + TTL_JITTER)
        begin = now
        timeout_at = now + opts.drain_timeout
        quiet_since: float | None = None
        last_total: int | None = None
        while True:
            sample = self.engine.sessions(old)
            now = time.monotonic()
            in_use = sample.count > 0 or (
                sample.connections_total is not None
                and last_total is not None
                and sample.connections_total > last_total
            )
            last_total = sample.connections_total
            if now - switched >= min_wait:
                if in_use:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
            quiet = 0.0 if quiet_since is None else now - quiet_since
            _emit(
                self.on_event,
                DrainProgress(
                    user=old,
                    sessions=sample,
                    waited=now - switched,
                    min_wait=min_wait,
                    quiet=quiet,
                    needed_quiet=opts.client_ttl,
                    timeout_in=max(0.0, timeout_at - now),
                ),
            )
            if quiet_since is not None and quiet >= opts.client_ttl:
                self.rot.drain_seconds = now - switched
                return True
            if now >= timeout_at:
                if not opts.terminate:
                    self.rot.drain_seconds = None
                    raise DrainTimeout(
                        f"drain timed out after {now - begin:.0f}s: user {old!r} still has "
                        f"{sample.count} session(s) ({sample.describe()}); find those clients, "
                        f"then run 'credflip rotate --env {self.layout.env}' to continue the "
                        f"drain, or add --terminate to end them"
                    )
                # Lock first so that terminated clients cannot log back in
                # with the old password; they re-resolve and get the new one.
                self.engine.lock_user(old)
                ended = self.engine.terminate(old)
                self.rot.terminated += ended
                self.notice(f"terminated {ended} session(s) of {old!r} after the drain timeout")
                self.rot.drain_seconds = time.monotonic() - switched
                return True
            if opts.deadline is not None and now + opts.sample_interval >= opts.deadline:
                self.notice("stopping in the drain to respect the deadline; run again to resume")
                return False
            time.sleep(opts.sample_interval)

    def _retire(self) -> bool:
        old, keep = self.user(self.rot.from_color), self.user(self.rot.to_color)
        if self.options.retire == "drop":
            self.engine.drop_user(old, keep=keep, group=self.state.group)
        else:
            self.engine.lock_user(old)
        return True

    def _done(self) -> bool:
        rot = self.rot
        self.state.history.append(
            HistoryEntry(
                id=rot.id,
                result="done",
                from_color=rot.from_color,
                to_color=rot.to_color,
                started_at=rot.started_at,
                finished_at=time.time(),
                timings=dict(rot.timings),
                drain_seconds=rot.drain_seconds,
                terminated=rot.terminated,
            )
        )
        self.state.current = None
        save_state(self.store, self.layout, self.state)
        self.state.current = rot
        return True


def rotate(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    options: RotateOptions | None = None,
    engine: Engine | None = None,
    on_event: Callable[[Event], None] | None = None,
    lock_expires_at: float | None = None,
) -> RotationResult:
    """Rotate the inactive user's password and move clients to it.

    Resumes an unfinished rotation from its recorded phase. Raises
    :class:`~credflip.errors.LockHeld` when another rotation runs and
    :class:`~credflip.errors.DrainTimeout` when old sessions outlast the drain
    (the rotation stays resumable). With ``options.deadline`` the call may
    return early with ``finished=False``; call again to continue.
    *lock_expires_at* (wall clock) tells other processes when the lock may
    be considered stale if this one dies without releasing it (Lambda).
    """
    options = options or RotateOptions()
    load_state(store, layout)  # a clear error before taking the lock
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    try:
        with hold_lock(
            store,
            layout,
            purpose="rotate",
            notice=lambda m: _emit(on_event, Notice(m)),
            expires_at=lock_expires_at,
        ):
            state = load_state(store, layout)
            if state.engine != eng.name:
                raise ConfigurationError(
                    f"env {layout.env!r} is managed with {state.engine} but the admin URL is "
                    f"{eng.name}: pass the admin URL of that {state.engine} server"
                )
            resumed = state.current is not None
            if state.current is None:
                pointer = read_pointer(store, layout)
                target = state.users[pointer.other]
                in_use = eng.sessions(target)
                if in_use.count:
                    raise RotationError(
                        f"the inactive user {target!r} ({pointer.other}) still has "
                        f"{in_use.count} session(s) ({in_use.describe()}): clients still use "
                        f"it; wait until they move to {pointer} (one client TTL after the last "
                        f"switch) and run rotate again"
                    )
                state.current = Rotation(
                    id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2),
                    from_color=pointer,
                    to_color=pointer.other,
                    phase=Phase.PREPARE,
                    started_at=time.time(),
                )
                save_state(store, layout, state)
            else:
                assert state.current is not None  # noqa: S101
                _emit(
                    on_event,
                    Notice(
                        f"resuming rotation {state.current.id} "
                        f"({state.current.from_color} → {state.current.to_color}) at "
                        f"{state.current.phase}"
                    ),
                )
            return _Run(store, layout, eng, state, options, on_event).run(resumed)
    finally:
        if own_engine:
            eng.close()


def rollback(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    probe: str | None = None,
    engine: Engine | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> RollbackResult:
    """Restore the color that was active before the last (or current) rotation.

    Before the switch this abandons the rotation and locks the half-prepared
    user. After it, the old user is unlocked if needed, its URLs are verified,
    and only then does the pointer move back. Refused when the old user was
    dropped or its URLs no longer connect.
    """
    load_state(store, layout)
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)

    def notice(message: str) -> None:
        _emit(on_event, Notice(message))

    try:
        with hold_lock(store, layout, purpose="rollback", notice=notice):
            state = load_state(store, layout)
            pointer = read_pointer(store, layout)
            cur = state.current
            started_at = cur.started_at if cur else time.time()
            if cur is not None and not cur.phase.switched and pointer is cur.from_color:
                # The pointer never moved: abandon, and put the half-prepared
                # user back to the locked state an inactive color has.
                eng.lock_user(state.users[cur.to_color])
                _record_rollback(store, layout, state, cur.from_color, cur.to_color, started_at)
                return RollbackResult(cur.from_color, state.users[cur.from_color], False, False)
            if cur is not None:
                back, away = cur.from_color, cur.to_color
            else:
                last = state.last
                if last is None or last.result != "done":
                    raise RotationError(
                        "nothing to roll back: "
                        + (
                            "no rotation has run yet"
                            if last is None
                            else "the last rotation was already rolled back"
                        )
                    )
                back, away = last.from_color, last.to_color
            if pointer is not away:
                raise RotationError(
                    f"cannot roll back: the pointer names {pointer}, not {away}; it was changed "
                    f"outside credflip"
                )
            user = state.users[back]
            current = eng.user_state(user)
            if not current.exists:
                raise RotationError(
                    f"cannot roll back: user {user!r} ({back}) was dropped when it was retired; "
                    f"run 'credflip rotate' to move to a fresh password instead"
                )
            unlocked = False
            if not current.can_login:
                eng.unlock_user(user)
                unlocked = True
                notice(f"unlocked {user!r} ({back})")
            for role, url in read_urls(store, layout, back).items():
                try:
                    eng.verify(url, probe=probe)
                except CredflipError as exc:
                    if unlocked:
                        eng.lock_user(user)
                    raise RotationError(
                        f"cannot roll back: the {back} {role} URL ({url}) does not connect: "
                        f"{exc}; the pointer still names {away}"
                    ) from exc
            store.put(layout.pointer, back.value, secure=False)
            _record_rollback(store, layout, state, back, away, started_at)
            return RollbackResult(back, user, True, unlocked)
    finally:
        if own_engine:
            eng.close()


def _record_rollback(
    store: Store, layout: Layout, state: State, back: Color, away: Color, started_at: float
) -> None:
    rid = state.current.id if state.current else "rollback-" + secrets.token_hex(2)
    state.history.append(
        HistoryEntry(
            id=rid,
            result="rolled_back",
            from_color=away,
            to_color=back,
            started_at=started_at,
            finished_at=time.time(),
        )
    )
    state.current = None
    save_state(store, layout, state)
