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

from .backoff import Backoff
from .drain import DrainPolicy, DrainStatus, DrainTracker, Reading, Verdict
from .durations import format_duration
from .engines import Engine, engine_for
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    CredflipError,
    DatabaseUnavailable,
    DrainTimeout,
    RotationError,
    UsageError,
)
from .instances import Fleet, format_address, parse_address
from .instances import normalize as instances_normalize
from .layout import ROLES, Color, Layout, Role
from .state import (
    HistoryEntry,
    Phase,
    Rotation,
    State,
    hold_lock,
    load_state,
    require_engine,
    save_state,
)
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
    "preflight",
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
    #: Never retire the old user sooner than this after the switch.
    min_drain: float = 0.0
    #: How long verify waits for replicas to replay the new password.
    replica_lag_timeout: float = 30.0
    #: Refuse to rotate unless every instance counts logins per user.
    require_counters: bool = False
    #: Instances (``host[:port]``) to add to the env's list, and to drop from it.
    instances: tuple[str, ...] = ()
    forget_instances: tuple[str, ...] = ()
    #: How long a phase keeps trying while the database is unreachable, restarting
    #: or failing over, before the rotation stops (resumable).
    reconnect_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "client_ttl",
            "drain_timeout",
            "min_drain",
            "replica_lag_timeout",
            "reconnect_timeout",
        ):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative")
        for text in (*self.instances, *self.forget_instances):
            parse_address(text)
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
    """One sample of the drain: the tracker's verdict and what each instance showed."""

    user: str
    status: DrainStatus
    readings: tuple[Reading, ...] = ()


@dataclass(frozen=True)
class Notice:
    """Something the operator should know; ``level`` is ``note`` or ``warning``."""

    message: str
    level: str = "note"


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
        fleet: Fleet,
        state: State,
        options: RotateOptions,
        on_event: Callable[[Event], None] | None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.fleet = fleet
        self.engine = fleet.primary
        self.state = state
        self.options = options
        self.on_event = on_event
        self.secrets: list[str] = []
        #: Set while a failure in verify means the prepared password is wrong.
        self.redo_prepare = True

    @property
    def rot(self) -> Rotation:
        assert self.state.current is not None  # noqa: S101 - set before any phase runs
        return self.state.current

    def user(self, color: Color) -> str:
        return self.state.users[color]

    def notice(self, message: str, level: str = "note") -> None:
        _emit(self.on_event, Notice(scrub(message, self.secrets), level))

    def run(self, resumed: bool) -> RotationResult:
        """Run phases from the recorded one until DONE or a safe stop.

        A phase that loses the database is run again after a pause, until
        ``reconnect_timeout`` (or the deadline) runs out.
        """
        first = True
        backoff = Backoff(self.options.reconnect_timeout)
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
            except DatabaseUnavailable as exc:
                delay = backoff.next_delay(deadline=self.options.deadline)
                if delay is not None:
                    self.notice(
                        f"{phase}: {exc}; trying the phase again in {delay:.1f}s "
                        f"({backoff.left():.0f}s of --reconnect-timeout left)",
                        level="warning",
                    )
                    time.sleep(delay)
                    continue
                stopped = RotationError(
                    f"stopped in {phase}: {exc}; the pointer names {self._pointer_now()}; run "
                    f"'credflip rotate --env {self.layout.env}' again once the database answers"
                )
                self._failed(phase, stopped)
                raise stopped from exc
            except CredflipError as exc:
                self._failed(phase, exc)
                raise
            backoff.reset()
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

    def _failed(self, phase: Phase, exc: CredflipError) -> None:
        """Record why *phase* failed, and where to resume."""
        self.rot.error = scrub(str(exc), self.secrets)[:300]
        if phase is Phase.VERIFY and self.redo_prepare:
            # The new password itself did not work: nothing was switched,
            # so prepare again on the next run. A replica that lags or is
            # down keeps the rotation in verify, so that resuming waits for
            # the same password instead of setting a new one that must
            # replicate all over again.
            self.rot.phase = Phase.PREPARE
        # Best effort: when the store itself failed, the phase recorded at the
        # last boundary is still a safe place to resume from.
        with contextlib.suppress(CredflipError):
            save_state(self.store, self.layout, self.state)

    def _pointer_now(self) -> str:
        phase = self.rot.phase
        return str(self.rot.to_color if phase.switched else self.rot.from_color)

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
        # Replicas have the new password once they replayed this far.
        self.rot.position = self.engine.position()
        for role, url in urls.items():
            fresh = url.with_credentials(target, password)
            self.store.put(self.layout.url(self.rot.to_color, role), fresh.secret, secure=True)
        return True

    def _verify(self) -> bool:
        to = self.rot.to_color
        user = self.user(to)
        urls = read_urls(self.store, self.layout, to)
        self.redo_prepare = True
        for role, url in urls.items():
            if url.user != user:
                raise RotationError(
                    f"{self.layout.url(to, role)} logs in as {url.user!r}, not {user!r}; run "
                    f"'credflip rotate' again"
                )
        # The writer took the new password synchronously: it must work now.
        self._verify_one("writer URL", urls["writer"], retry_until=None)
        self.redo_prepare = False
        lag = self.options.replica_lag_timeout
        retry_until = time.monotonic() + lag
        self.fleet.wait_replayed(
            self.rot.position,
            timeout=lag,
            why=f"the new password of {user!r}",
            notice=self.notice,
        )
        done = {_address(urls["writer"], self.fleet)}
        targets = [("reader URL", urls["reader"])]
        targets += [
            (f"instance {inst.address} ({inst.source})", inst.on(urls["reader"]))
            for inst in self.fleet.instances
        ]
        for label, url in targets:
            address = _address(url, self.fleet)
            if address in done:
                continue
            done.add(address)
            self._verify_one(label, url, retry_until=retry_until)
        return True

    def _verify_one(self, label: str, url: DbUrl, *, retry_until: float | None) -> None:
        """Log in with *url*; on a replica, retry a refused login until *retry_until*."""
        last_note = time.monotonic()
        while True:
            try:
                self.engine.verify(url, probe=self.options.probe)
                return
            except AuthenticationFailed as exc:
                now = time.monotonic()
                if retry_until is None or now >= retry_until:
                    raise self._verify_failed(label, url, exc) from exc
                if now - last_note >= 2.0:
                    self.notice(
                        f"waiting for the {label} to accept the new password (a replica that "
                        f"has not replayed it yet); {retry_until - now:.0f}s left"
                    )
                    last_note = now
                time.sleep(0.2)
            except DatabaseUnavailable:
                raise  # the server, not the password: the phase is tried again
            except CredflipError as exc:
                raise self._verify_failed(label, url, exc) from exc

    def _verify_failed(self, label: str, url: DbUrl, exc: CredflipError) -> RotationError:
        rot = self.rot
        return RotationError(
            f"verify failed for the {rot.to_color} {label} ({url}): {exc}; the pointer still "
            f"names {rot.from_color}; fix the cause and run 'credflip rotate' again, or "
            f"'credflip rollback'"
        )

    def _switch(self) -> bool:
        self.store.put(self.layout.pointer, self.rot.to_color.value, secure=False)
        self.rot.switched_at = time.time()
        return True

    def _require_switched(self) -> None:
        """The old user may only be drained and retired while the pointer names the new one."""
        pointer = read_pointer(self.store, self.layout)
        if pointer is not self.rot.to_color:
            raise RotationError(
                f"the pointer names {pointer}, but this rotation switched to "
                f"{self.rot.to_color}: a rollback was interrupted or someone moved it; the "
                f"{pointer} user is left alone; run 'credflip rollback --env {self.layout.env}' "
                f"to finish the rollback"
            )

    def _drain(self) -> bool:
        self._require_switched()
        opts = self.options
        rot = self.rot
        old, group = self.user(rot.from_color), self.state.group
        policy = DrainPolicy(client_ttl=rot.client_ttl or 0.0, min_drain=rot.min_drain or 0.0)
        problem = self.engine.count_problem(old, group)
        if self.fleet.can_count(old, group):
            self.engine.begin_watch(old, group)
        # Standbys count the old user's logins once they replayed this far.
        position = self.engine.position() if problem is None else None
        self._announce(old, group)
        now = time.monotonic()
        # Persisted times are wall-clock; translate once, then use monotonic.
        switched = now - max(0.0, time.time() - (rot.switched_at or time.time()))
        tracker = DrainTracker(
            policy,
            switched_at=switched,
            timeout_at=now + opts.drain_timeout,
            longest_gap=rot.drain_gap,
        )
        begin = now
        while True:
            readings = self.fleet.read(old, counting=problem is None, position=position)
            now = time.monotonic()
            status = tracker.observe(now, readings)
            rot.drain_gap = tracker.longest_gap
            _emit(self.on_event, DrainProgress(old, status, tuple(readings)))
            if status.verdict is Verdict.DONE:
                rot.drain_seconds = now - switched
                return True
            if status.verdict is Verdict.TIMEOUT:
                if not opts.terminate:
                    rot.drain_seconds = None
                    raise DrainTimeout(self._timeout_message(old, status, readings, now - begin))
                self._terminate(old, readings)
                rot.drain_seconds = time.monotonic() - switched
                return True
            if opts.deadline is not None and now + opts.sample_interval >= opts.deadline:
                self.notice("stopping in the drain to respect the deadline; run again to resume")
                return False
            time.sleep(opts.sample_interval)

    def _announce(self, old: str, group: str | None) -> None:
        """Name the drain's instances and signals; warn when a short login could be missed."""
        parts = []
        for inst, sigs in self.fleet.signals():
            names = (
                "unreachable"
                if isinstance(sigs, CredflipError)
                else ", ".join(s.name for s in sigs if s.available) or "nothing"
            )
            parts.append(f"{inst.address} ({inst.source}) [{names}]")
        self.notice(f"drain: watching {old!r} on {'; '.join(parts)}")
        gaps = self.fleet.counter_gaps(old, group)
        if gaps:
            self.notice(
                f"no login counter: {'; '.join(gaps)}; a client that connects and leaves within "
                f"one sample ({format_duration(self.options.sample_interval)}) may be missed "
                f"(--require-counters refuses to rotate without one)",
                level="warning",
            )

    def _timeout_message(
        self, old: str, status: DrainStatus, readings: list[Reading], waited: float
    ) -> str:
        env = self.layout.env
        if status.reasons:
            message = (
                f"drain timed out after {waited:.0f}s: user {old!r} is still in use "
                f"({'; '.join(status.reasons)}); find those clients, then run 'credflip rotate "
                f"--env {env}' to continue the drain, or add --terminate to end them"
            )
        else:
            message = (
                f"drain timed out after {waited:.0f}s: user {old!r} shows no use, but the quiet "
                f"window or --min-drain needs {format_duration(status.done_in)} more; run "
                f"'credflip rotate --env {env}' again later to continue the drain"
            )
        down = [r.instance for r in readings if r.error is not None]
        if down:
            message += (
                f"; an instance that cannot be reached counts as in use: start "
                f"{', '.join(down)}, or if it was removed for good, run 'credflip rotate --env "
                f"{env} --forget-instance {down[0]}'"
            )
        return message

    def _terminate(self, old: str, readings: list[Reading]) -> None:
        down = [r.instance for r in readings if r.error is not None]
        if down:
            raise RotationError(
                f"cannot end the sessions of {old!r}: {', '.join(down)} cannot be reached; the "
                f"old user is not retired; start it, or drop it with --forget-instance"
            )
        # Lock first so that terminated clients cannot log back in with the
        # old password; standbys must know of the lock before their sessions
        # are ended. Clients re-resolve and get the new color.
        self.engine.lock_user(old)
        self.fleet.wait_replayed(
            self.engine.position(),
            timeout=self.options.replica_lag_timeout,
            why=f"the lock of {old!r}",
            notice=self.notice,
        )
        ended = self.fleet.terminate(old)
        self.rot.terminated += ended
        self.notice(f"terminated {ended} session(s) of {old!r} after the drain timeout")

    def _retire(self) -> bool:
        self._require_switched()
        old, keep = self.user(self.rot.from_color), self.user(self.rot.to_color)
        drop = self.options.retire == "drop"
        self.engine.execute(
            self.engine.plan_retire(old, keep=keep, group=self.state.group, drop=drop)
        )
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
        try:
            save_state(self.store, self.layout, self.state)
        except CredflipError:
            # Still DONE in the store: the next run records it once, not twice.
            self.state.history.pop()
            raise
        finally:
            self.state.current = rot
        return True


def _address(url: DbUrl, fleet: Fleet) -> str:
    port = url.port or fleet.instances[0].port
    return format_address(url.host.lower(), port)


def env_fleet(
    store: Store,
    layout: Layout,
    state: State,
    engine: Engine,
    *,
    strict: bool = True,
    notice: Callable[[str], None] = lambda _m: None,
) -> Fleet:
    """The instances an env's drain watches: admin host, URL hosts, stored, Aurora members."""
    values = store.get_many([layout.url(c, r) for c in Color for r in ROLES])
    urls: list[tuple[str, DbUrl]] = []
    for color in Color:
        for role in ROLES:
            text = values.get(layout.url(color, role))
            if text:
                urls.append(
                    (f"{color} {role} URL", DbUrl.parse(text, what=layout.url(color, role)))
                )
    return Fleet.of(engine, urls=urls, stored=state.instances, strict=strict, notice=notice)


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

    def notice(message: str) -> None:
        _emit(on_event, Notice(message))

    try:
        with hold_lock(store, layout, purpose="rotate", notice=notice, expires_at=lock_expires_at):
            state = load_state(store, layout)
            require_engine(state, eng.name, layout)
            instances = instance_list(state.instances, options)
            state.instances = instances
            fleet = env_fleet(store, layout, state, eng, notice=notice)
            try:
                return _start_or_resume(store, layout, fleet, state, options, on_event)
            finally:
                fleet.close()
    finally:
        if own_engine:
            eng.close()


def instance_list(stored: list[str], options: RotateOptions) -> list[str]:
    """The env's stored instances with ``--instance`` added and ``--forget-instance`` removed."""
    return instances_normalize(stored, options.instances, options.forget_instances)


def preflight(fleet: Fleet, state: State, pointer: Color, options: RotateOptions) -> None:
    """What must hold before a rotation (or its dry run) changes anything."""
    fleet.require_session_views()
    current = state.current
    from_color = current.from_color if current is not None else pointer
    if options.require_counters:
        gaps = fleet.counter_gaps(state.users[from_color], state.group)
        if gaps:
            raise ConfigurationError(
                f"--require-counters: the drain could miss a short login: {'; '.join(gaps)}; "
                f"nothing was changed"
            )
    if current is not None:
        return
    target = state.users[pointer.other]
    for inst, found in fleet.sessions(target):
        if isinstance(found, CredflipError):
            raise RotationError(
                f"cannot check whether the inactive user {target!r} is idle on "
                f"{inst.address} ({inst.source}): {found}; start it, or if it was removed "
                f"for good, add --forget-instance {inst.address}"
            )
        if found.count:
            raise RotationError(
                f"the inactive user {target!r} ({pointer.other}) still has {found.count} "
                f"session(s) on {inst.address} ({found.describe()}): clients still use it; "
                f"wait until they move to {pointer} (one client TTL after the last switch) "
                f"and run rotate again"
            )


def _start_or_resume(
    store: Store,
    layout: Layout,
    fleet: Fleet,
    state: State,
    options: RotateOptions,
    on_event: Callable[[Event], None] | None,
) -> RotationResult:
    """Checks that must pass before anything changes, then the phases."""
    pointer = read_pointer(store, layout)
    current = state.current
    preflight(fleet, state, pointer, options)
    if current is None:
        current = Rotation(
            id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2),
            from_color=pointer,
            to_color=pointer.other,
            phase=Phase.PREPARE,
            started_at=time.time(),
            client_ttl=options.client_ttl,
            min_drain=options.min_drain,
        )
        state.current = current
        resumed = False
    else:
        resumed = True
        _emit(
            on_event,
            Notice(
                f"resuming rotation {current.id} ({current.from_color} → {current.to_color}) "
                f"at {current.phase}"
            ),
        )
        # A resume never waits less than the rotation was started with.
        for name, given in (("client_ttl", options.client_ttl), ("min_drain", options.min_drain)):
            recorded = getattr(current, name)
            if recorded is not None and recorded > given:
                _emit(
                    on_event,
                    Notice(
                        f"using --{name.replace('_', '-')} {format_duration(recorded)} recorded "
                        f"when this rotation started (more than {format_duration(given)})"
                    ),
                )
            setattr(current, name, max(recorded or 0.0, given))
    save_state(store, layout, state)
    return _Run(store, layout, fleet, state, options, on_event).run(resumed)


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
            if pointer is not away and pointer is not back:
                raise RotationError(
                    f"cannot roll back: the pointer names {pointer}, not {away}; it was changed "
                    f"outside credflip"
                )
            # pointer is back: an earlier rollback moved it and stopped before
            # recording; finish it (the steps below are safe to repeat).
            user = state.users[back]
            current = eng.user_state(user)
            if not current.exists:
                raise RotationError(
                    f"cannot roll back: user {user!r} ({back}) was dropped when it was retired; "
                    f"run 'credflip rotate' to move to a fresh password instead"
                )
            # The drain may have let this user's logins run as itself.
            eng.end_watch(user, state.group)
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
            flipped = pointer is not back
            if flipped:
                store.put(layout.pointer, back.value, secure=False)
            _record_rollback(store, layout, state, back, away, started_at)
            return RollbackResult(back, user, flipped, unlocked)
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
