"""credflip's own state in the store: the rotation record and the lock.

``/db/{env}/rotation`` holds a small JSON document: which user is which
color, the group role, the rotation under way (its phase, colors and
timings) and the last rotations. It is written at every phase boundary, so a
crashed rotation resumes from where it stopped. It stays under the 4 KB of a
standard SSM parameter by dropping the oldest history first.

``/db/{env}/rotation-lock`` exists only while a rotation or rollback runs. It
is written create-only, so exactly one process wins.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    ConfigurationError,
    CredflipError,
    LockHeld,
    NotInitialized,
    ParameterExists,
    StoreError,
)
from .layout import Color, Layout
from .stores.base import MAX_VALUE_BYTES, Store

__all__ = [
    "HistoryEntry",
    "LockInfo",
    "Phase",
    "Rotation",
    "State",
    "hold_lock",
    "load_state",
    "read_lock",
    "require_engine",
    "save_state",
]

STATE_VERSION = 1
_MAX_HISTORY = 20


class Phase(enum.StrEnum):
    """The phases of a rotation, in order."""

    PREPARE = "prepare"
    VERIFY = "verify"
    SWITCH = "switch"
    DRAIN = "drain"
    RETIRE = "retire"
    DONE = "done"

    @property
    def next(self) -> Phase:
        """The phase after this one (DONE is last)."""
        order = list(Phase)
        return order[min(order.index(self) + 1, len(order) - 1)]

    @property
    def switched(self) -> bool:
        """True for phases that start after the pointer was written."""
        return self in {Phase.DRAIN, Phase.RETIRE, Phase.DONE}


def _maybe_float(data: dict[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else float(data[key])


def _timings(data: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(data.get("timings") or {}).items()}


@dataclass
class Rotation:
    """The rotation under way."""

    id: str
    from_color: Color
    to_color: Color
    phase: Phase
    started_at: float
    timings: dict[str, float] = field(default_factory=dict)
    switched_at: float | None = None
    drain_seconds: float | None = None
    terminated: int = 0
    error: str | None = None
    #: The drain's settings when the rotation started; a resume never waits less.
    client_ttl: float | None = None
    min_drain: float | None = None
    #: The primary's write position right after prepare (PostgreSQL LSN):
    #: verify waits for every standby to replay it.
    position: str | None = None
    #: The longest pause the drain saw between two uses of the old user.
    drain_gap: float = 0.0
    #: The quiet window the rotation was started with (a resume never waits less).
    quiet: float | None = None
    #: After a rollback: the color about to be prepared was drained first.
    predrained: bool = False
    #: Prepare began changing the new color (its password may have changed).
    prepared: bool = False
    #: The drain's evidence, kept across runs (:class:`credflip.drain.Evidence`).
    evidence: dict[str, Any] = field(default_factory=dict)
    #: The clients seen using the old user after the cache wait, most recent
    #: last (:class:`credflip.legacy.LegacyClient` as dicts).
    legacy: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["drain_gap"] = round(self.drain_gap, 3)
        data["from_color"] = self.from_color.value
        data["to_color"] = self.to_color.value
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rotation:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            from_color=Color(data["from_color"]),
            to_color=Color(data["to_color"]),
            phase=Phase(data["phase"]),
            started_at=float(data["started_at"]),
            timings=_timings(data),
            switched_at=_maybe_float(data, "switched_at"),
            drain_seconds=_maybe_float(data, "drain_seconds"),
            terminated=int(data.get("terminated") or 0),
            error=data.get("error"),
            client_ttl=_maybe_float(data, "client_ttl"),
            min_drain=_maybe_float(data, "min_drain"),
            position=None if data.get("position") is None else str(data["position"]),
            drain_gap=float(data.get("drain_gap") or 0.0),
            quiet=_maybe_float(data, "quiet"),
            predrained=bool(data.get("predrained")),
            prepared=bool(data.get("prepared")),
            evidence=dict(data.get("evidence") or {}),
            legacy=[dict(x) for x in data.get("legacy") or []],
        )


@dataclass
class HistoryEntry:
    """One finished rotation or rollback."""

    id: str
    result: str  # "done" or "rolled_back"
    from_color: Color
    to_color: Color
    started_at: float
    finished_at: float
    timings: dict[str, float] = field(default_factory=dict)
    drain_seconds: float | None = None
    terminated: int = 0
    #: A rollback: whether the pointer had moved (clients used the color left).
    switched: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with times rounded to what is worth keeping."""
        extra: dict[str, Any] = {} if self.switched else {"switched": False}
        return {
            **extra,
            "id": self.id,
            "result": self.result,
            "from_color": self.from_color.value,
            "to_color": self.to_color.value,
            "started_at": round(self.started_at, 3),
            "finished_at": round(self.finished_at, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 3),
            "terminated": self.terminated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            result=str(data["result"]),
            from_color=Color(data["from_color"]),
            to_color=Color(data["to_color"]),
            started_at=float(data["started_at"]),
            finished_at=float(data["finished_at"]),
            timings=_timings(data),
            drain_seconds=_maybe_float(data, "drain_seconds"),
            terminated=int(data.get("terminated") or 0),
            switched=bool(data.get("switched", True)),
        )


@dataclass
class State:
    """Everything credflip records about one environment."""

    engine: str
    users: dict[Color, str]
    group: str | None = None
    managed_since: float = field(default_factory=time.time)
    current: Rotation | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    #: Extra instances the drain watches (``host:port``), from ``--instance``.
    instances: list[str] = field(default_factory=list)
    #: The operator accepted draining on open sessions alone where an
    #: instance has no cumulative counter (``init --sessions-only``).
    sessions_only: bool = False

    def to_json(self) -> str:
        """Serialise, dropping the oldest history until it fits a standard parameter,
        then the legacy clients seen longest ago (still counted)."""
        from .legacy import shrink

        history = self.history[-_MAX_HISTORY:]
        legacy = self.current.legacy if self.current else []
        while True:
            current = self.current.to_dict() if self.current else None
            if current is not None:
                current["legacy"] = legacy
            text = json.dumps(
                {
                    "version": STATE_VERSION,
                    "engine": self.engine,
                    "users": {c.value: u for c, u in self.users.items()},
                    "group": self.group,
                    "instances": self.instances,
                    "sessions_only": self.sessions_only,
                    "managed_since": round(self.managed_since, 3),
                    "phase": self.current.phase.value if self.current else None,
                    "current": current,
                    "history": [h.to_dict() for h in history],
                },
                separators=(",", ":"),
            )
            if len(text.encode()) <= MAX_VALUE_BYTES:
                return text
            if history:
                history = history[1:]
                continue
            smaller = shrink(legacy)
            if smaller is None:
                return text
            legacy = smaller

    @classmethod
    def from_json(cls, text: str, *, where: str) -> State:
        """Parse the stored document; raise :class:`ConfigurationError` when it is damaged."""
        try:
            data = json.loads(text)
            if int(data.get("version", 0)) > STATE_VERSION:
                raise ConfigurationError(
                    f"{where} was written by a newer credflip (state version "
                    f"{data['version']}); upgrade credflip"
                )
            return cls(
                engine=str(data["engine"]),
                users={Color(c): str(u) for c, u in dict(data["users"]).items()},
                group=data.get("group"),
                managed_since=float(data.get("managed_since") or 0.0),
                current=Rotation.from_dict(data["current"]) if data.get("current") else None,
                history=[HistoryEntry.from_dict(h) for h in data.get("history") or []],
                instances=[str(i) for i in data.get("instances") or []],
                sessions_only=bool(data.get("sessions_only")),
            )
        except ConfigurationError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"{where} is not valid credflip state ({type(exc).__name__}); restore it from "
                f"a backup or delete it and run 'credflip init' again"
            ) from exc

    @property
    def last(self) -> HistoryEntry | None:
        """The most recent history entry, if any."""
        return self.history[-1] if self.history else None


def load_state(store: Store, layout: Layout) -> State:
    """Read the environment's state; raise :class:`NotInitialized` when there is none."""
    text = store.get(layout.state)
    if text is None:
        raise NotInitialized(
            f"env {layout.env!r} is not managed by credflip in {store.url} (no {layout.state}): "
            f"run 'credflip init --env {layout.env}' first, or check --env/--store/--prefix"
        )
    return State.from_json(text, where=layout.state)


def require_engine(state: State, engine: str, layout: Layout) -> None:
    """Refuse an admin URL of another engine than the env's."""
    if engine != state.engine:
        raise ConfigurationError(
            f"env {layout.env!r} is managed with {state.engine} but the admin URL is "
            f"{engine}: pass the admin URL of that {state.engine} server"
        )


def save_state(store: Store, layout: Layout, state: State) -> None:
    """Write the state (plain String: it holds no secret)."""
    store.put(layout.state, state.to_json(), secure=False)


@dataclass(frozen=True)
class LockInfo:
    """Who holds an environment's rotation lock."""

    owner: str
    host: str
    pid: int
    started_at: float
    purpose: str = "rotate"
    token: str = field(default="", repr=False)
    #: Wall-clock time after which the holder is certainly gone (a Lambda's
    #: invocation cannot outlive its timeout); None when unknown.
    expires_at: float | None = None
    #: The holder's kernel boot and PID namespace: its pid means something
    #: here only when both match ours (containers share host names).
    pid_space: str = ""

    @classmethod
    def mine(cls, purpose: str, expires_at: float | None = None) -> LockInfo:
        """A lock record for this process."""
        try:
            owner = getpass.getuser()
        except (KeyError, OSError):
            owner = str(os.getuid())
        return cls(
            owner=owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            purpose=purpose,
            token=secrets.token_hex(8),
            expires_at=expires_at,
            pid_space=pid_space(),
        )

    def to_json(self) -> str:
        """Serialise for the lock parameter."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        """Parse the lock parameter; a damaged one still names itself as held."""
        try:
            data = json.loads(text)
            return cls(
                owner=str(data.get("owner", "?")),
                host=str(data.get("host", "?")),
                pid=int(data.get("pid", 0)),
                started_at=float(data.get("started_at", 0.0)),
                purpose=str(data.get("purpose", "rotate")),
                token=str(data.get("token", "")),
                expires_at=_maybe_float(data, "expires_at"),
                pid_space=str(data.get("pid_space", "")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls(owner="?", host="?", pid=0, started_at=0.0, purpose="unknown")

    def describe(self) -> str:
        """``alice on host-1 (pid 4242) since 2026-11-25 10:00:00Z, for rotate``."""
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.started_at))
        return f"{self.owner} on {self.host} (pid {self.pid}) since {since}, for {self.purpose}"

    def is_stale_here(self) -> bool:
        """True when the holder is certainly gone.

        Either its declared expiry passed, or it ran on this host, in this
        boot and PID namespace, and its process no longer exists. Two
        containers with the same host name (host networking) have different
        PID namespaces: a pid of the other one says nothing here.
        """
        if self.expires_at is not None and time.time() > self.expires_at:
            return True
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        if not self.pid_space or self.pid_space != pid_space():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def pid_space() -> str:
    """This process's kernel boot id and PID namespace (Linux), or '' when unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def read_lock(store: Store, layout: Layout) -> LockInfo | None:
    """Return who holds the lock, or None."""
    text = store.get(layout.lock)
    return None if text is None else LockInfo.from_json(text)


@contextlib.contextmanager
def hold_lock(
    store: Store,
    layout: Layout,
    *,
    purpose: str,
    notice: Callable[[str], None] = lambda _msg: None,
    expires_at: float | None = None,
) -> Iterator[LockInfo]:
    """Hold the environment's lock for the duration; raise :class:`LockHeld` if taken.

    A lock left by a process that died on this same host, or whose declared
    expiry passed, is taken over (with a notice); any other needs
    ``credflip unlock --force``.
    """
    mine = LockInfo.mine(purpose, expires_at)
    for attempt in range(2):
        try:
            store.put(layout.lock, mine.to_json(), secure=False, overwrite=False)
            break
        except ParameterExists:
            text = store.get(layout.lock)
            held = None if text is None else LockInfo.from_json(text)
            if held is not None and text is not None and attempt == 0 and held.is_stale_here():
                notice(f"taking over a stale lock: {held.describe()} (its holder is gone)")
                store.delete_if(layout.lock, text)
                continue
            holder = held.describe() if held else "a process that just released it"
            raise LockHeld(
                f"another {held.purpose if held else 'rotation'} of env {layout.env!r} holds "
                f"the lock: {holder}; wait for it to finish, or if it died run "
                f"'credflip unlock --env {layout.env} --force'"
            ) from None
    # Only our own lock is deleted: if it was broken with --force and someone
    # else took it, theirs must survive our exit.
    try:
        yield mine
    except BaseException:
        # The error in flight is what the caller must see (a drain timeout
        # stays exit 4); a store that also fails to release is reported aside.
        try:
            store.delete_if(layout.lock, mine.to_json())
        except CredflipError as exc:
            notice(
                f"could not release the lock ({exc}); once nothing runs, run 'credflip unlock "
                f"--env {layout.env} --force'"
            )
        raise
    try:
        store.delete_if(layout.lock, mine.to_json())
    except CredflipError as exc:
        raise StoreError(
            f"the {purpose} itself finished, but releasing the lock failed ({exc}); run "
            f"'credflip unlock --env {layout.env} --force'"
        ) from exc
