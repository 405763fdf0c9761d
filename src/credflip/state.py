"""credflip's own state in the store: the rotation record of an environment.

``/db/{env}/rotation`` holds a small JSON document: which user is which
color, the group role, the rotation under way (its phase, colors and
timings) and the last rotations. It is written at every phase boundary, so a
crashed rotation resumes from where it stopped. It stays under the 4 KB of a
standard SSM parameter by dropping the oldest history first (never the newest
entry: it says whether the inactive color must be drained before its password
changes).

The lock (``/db/{env}/rotation-lock``) is :mod:`credflip.lock`; its names are
also importable from here.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .actor import Actor
from .errors import ConfigurationError, NotInitialized
from .layout import Color, Layout
from .legacy import shrink
from .lock import LockInfo, hold_lock, pid_space, read_lock
from .phase import Phase
from .predrain import predrain_due
from .stores.base import MAX_VALUE_BYTES, Store

__all__ = [
    "HistoryEntry",
    "LockInfo",
    "Phase",
    "Rotation",
    "State",
    "hold_lock",
    "load_state",
    "pid_space",
    "predrain_due",
    "read_lock",
    "require_engine",
    "save_state",
]

STATE_VERSION = 1
_MAX_HISTORY = 20


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
    #: When the color about to be prepared stopped being active, on the primary's
    #: clock: it is drained from then, like an old user, before its password changes
    #: (:func:`predrain_due`, fixed when the rotation starts). None: no predrain due.
    predrain_since: float | None = None
    #: The predrain is over: the color about to be prepared showed no use.
    predrained: bool = False
    #: Prepare began changing the new color (its password may have changed).
    prepared: bool = False
    #: The drain's evidence, kept across runs (:class:`credflip.drain.Evidence`).
    evidence: dict[str, Any] = field(default_factory=dict)
    #: The clients seen using the old user after the cache wait, most recent
    #: last (:class:`credflip.legacy.LegacyClient` as dicts).
    legacy: list[dict[str, Any]] = field(default_factory=list)
    #: What :attr:`error` was: ``drain_timeout`` (the drain timed out or is blocked, the
    #: rotation keeps the old user and resumes) or ``failed`` (anything else).
    error_kind: str | None = None
    #: Who started the rotation.
    by: Actor | None = None

    @property
    def predraining(self) -> bool:
        """Prepare still drains the new color first (see :attr:`predrain_since`)."""
        due = self.predrain_since is not None and not self.predrained
        return due and self.phase is Phase.PREPARE

    def to_dict(self, *, who: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (without who started it: *who* false)."""
        data = asdict(self)
        data["drain_gap"] = round(self.drain_gap, 3)
        data["from_color"] = self.from_color.value
        data["to_color"] = self.to_color.value
        data["phase"] = self.phase.value
        data["by"] = self.by.to_dict() if self.by and who else None
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
            predrain_since=_maybe_float(data, "predrain_since"),
            predrained=bool(data.get("predrained")),
            prepared=bool(data.get("prepared")),
            evidence=dict(data.get("evidence") or {}),
            legacy=[dict(x) for x in data.get("legacy") or []],
            error_kind=None if data.get("error_kind") is None else str(data["error_kind"]),
            by=Actor.from_dict(data.get("by")),
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
    #: A rollback: from when (the primary's clock) the color it left, *from_color*, is
    #: drained before its password changes again; None when it need not be.
    predrain_since: float | None = None
    #: Who started it, and who finished it when another run did (None: unknown).
    by: Actor | None = None
    done_by: Actor | None = None

    def to_dict(self, *, who: bool = True) -> dict[str, Any]:
        """A JSON-ready dict with times rounded to what is worth keeping (without who ran
        it: *who* false)."""
        extra: dict[str, Any] = {} if self.switched else {"switched": False}
        for key, actor in (("by", self.by), ("done_by", self.done_by)):
            if actor is not None and who:
                extra[key] = actor.to_dict()
        if self.result == "rolled_back":
            # Written even when None: an entry without it predates it (see _history).
            since = self.predrain_since
            extra["predrain_since"] = None if since is None else round(since, 3)
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
            predrain_since=_maybe_float(data, "predrain_since"),
            by=Actor.from_dict(data.get("by")),
            done_by=Actor.from_dict(data.get("done_by")),
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
    #: Rotate runs in a row that ended in an error (:mod:`credflip.halt`); any other run
    #: that takes the lock resets it.
    failures: int = 0

    def to_json(self) -> str:
        """Serialise so that it fits a standard parameter, dropping in this order: the
        oldest history down to the newest entry (never dropped: it says whether the
        inactive color must be drained before its password changes, see
        :func:`predrain_due`), the recorded error's detail (the legacy clients it names
        are kept apart), who ran the rotations, the legacy clients seen longest ago
        (still counted), and last the drain's evidence (a later run then starts its
        quiet window over: slower, never less safe)."""
        history = self.history[-_MAX_HISTORY:]
        legacy = self.current.legacy if self.current else []
        error_chars: int | None = None
        keep_evidence = who = True
        while True:
            current = self.current.to_dict(who=who) if self.current else None
            if current is not None:
                current["legacy"] = legacy
                if error_chars is not None and current.get("error"):
                    current["error"] = str(current["error"])[:error_chars]
                if not keep_evidence:
                    current["evidence"] = {}
            # Written only while some: most states never carry it.
            failures = {"failures": self.failures} if self.failures else {}
            text = json.dumps(
                {
                    **failures,
                    "version": STATE_VERSION,
                    "engine": self.engine,
                    "users": {c.value: u for c, u in self.users.items()},
                    "group": self.group,
                    "instances": self.instances,
                    "sessions_only": self.sessions_only,
                    "managed_since": round(self.managed_since, 3),
                    "phase": self.current.phase.value if self.current else None,
                    "current": current,
                    "history": _entries(history, who=who),
                },
                separators=(",", ":"),
            )
            if len(text.encode()) <= MAX_VALUE_BYTES:
                return text
            if len(history) > 1:
                history = history[1:]
            elif error_chars is None and current is not None and current.get("error"):
                error_chars = 80
            elif who and ('"by":{' in text or '"done_by":{' in text):
                who = False
            elif (smaller := shrink(legacy)) is not None:
                legacy = smaller
            elif keep_evidence and current is not None and current.get("evidence"):
                keep_evidence = False
            else:
                return text

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
            history = _history(data.get("history") or [])
            return cls(
                engine=str(data["engine"]),
                users={Color(c): str(u) for c, u in dict(data["users"]).items()},
                group=data.get("group"),
                managed_since=float(data.get("managed_since") or 0.0),
                current=_current(data.get("current"), history),
                history=history,
                instances=[str(i) for i in data.get("instances") or []],
                sessions_only=bool(data.get("sessions_only")),
                failures=int(data.get("failures") or 0),
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


def _entries(history: Sequence[HistoryEntry], *, who: bool) -> list[dict[str, Any]]:
    """The history as stored: an entry started by whoever started the one before says
    ``"by": "="`` (a schedule's entries all name the same role)."""
    out = [h.to_dict(who=who) for h in history]
    for data, before, entry in zip(out[1:], history, history[1:], strict=False):
        if who and entry.by is not None and entry.by == before.by:
            data["by"] = "="
    return out


def _history(items: Sequence[Any]) -> list[HistoryEntry]:
    """Parse the history. A rollback recorded before ``predrain_since`` was gets it as
    that version decided: from the rollback when it had switched, else from the entries
    before it (or, with none left, from the rollback: the safe side)."""
    out: list[HistoryEntry] = []
    for data in items:
        entry = HistoryEntry.from_dict(data)
        if data.get("by") == "=" and out:
            entry.by = out[-1].by
        if entry.result == "rolled_back" and "predrain_since" not in data:
            if entry.switched or not out:
                entry.predrain_since = entry.finished_at
            else:
                at = functools.partial(float, entry.finished_at)
                entry.predrain_since = predrain_due(out, entry.from_color, at)
        out.append(entry)
    return out


def _current(data: dict[str, Any] | None, history: Sequence[HistoryEntry]) -> Rotation | None:
    """Parse the rotation under way. One recorded before ``predrain_since`` was, and not
    yet changing the new color, takes it from the history, as that version derived it
    on every run."""
    if not data:
        return None
    rot = Rotation.from_dict(data)
    if "predrain_since" not in data and rot.phase is Phase.PREPARE and not rot.prepared:
        rot.predrain_since = predrain_due(history, rot.to_color, lambda: rot.started_at)
    return rot


def load_state(store: Store, layout: Layout, values: Mapping[str, str] | None = None) -> State:
    """Read the environment's state; raise :class:`NotInitialized` when there is none.

    *values*: the state's parameter is among these, read with others in one call."""
    text = store.get(layout.state) if values is None else values.get(layout.state)
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
