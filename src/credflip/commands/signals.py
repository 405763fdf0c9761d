"""What the drain will see on each instance: turn its counters on, report sessions and signals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engines import Engine, PooledBackend, Sessions, Signal
from ..errors import CredflipError
from ..instances import Fleet, Instance
from ..layout import Color, Layout
from ..poolers import PgBouncer
from ..poolers.rds_proxy import read_setting
from ..rotation import env_fleet
from ..state import State
from ..stores.base import Store


@dataclass(frozen=True)
class InstanceStatus:
    """One instance the drain watches, as ``status`` and ``init`` report it."""

    address: str
    source: str
    #: None when no admin URL was available to look.
    reachable: bool | None = None
    standby: bool | None = None
    sessions: dict[Color, Sessions] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    error: str | None = None

    @property
    def role(self) -> str | None:
        """``primary``, ``standby``, ``pooler`` (PgBouncer), or None when not known."""
        if self.source == PgBouncer.name:
            return "pooler"
        return None if self.standby is None else ("standby" if self.standby else "primary")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "address": self.address,
            "source": self.source,
            "reachable": self.reachable,
            "role": self.role,
            "sessions": {c.value: s.count for c, s in self.sessions.items()},
            "signals": [s.name for s in self.signals if s.available],
            "error": self.error,
        }


def enable_signals(store: Store, layout: Layout, state: State, engine: Engine) -> list[str]:
    """Turn on, on every instance that answers, the counters the admin may; say what was done."""
    done: list[str] = []
    fleet = env_fleet(store, layout, state, engine, strict=False)
    try:
        for inst in fleet.instances:
            eng = fleet.engine(inst)
            try:
                lines = eng.enable_signals()
            except CredflipError:
                if eng is engine:
                    raise
                eng.close()  # a standby that cannot be changed: status says what it lacks
                continue
            where = "" if eng is engine else f"on {inst.address}: "
            done += [where + line for line in lines]
    finally:
        fleet.close()
    return done


def drain_report(
    store: Store,
    layout: Layout,
    state: State,
    engine: Engine,
    *,
    watch: str,
) -> tuple[list[InstanceStatus], list[str], list[str]]:
    """Each instance's sessions and signals, the counter gaps for user *watch*, and the
    replicas no instance watches."""
    notes: list[str] = []
    fleet = env_fleet(store, layout, state, engine, strict=False, notice=notes.append)
    try:
        pooler, pooled = _pooler_status(fleet, state)
        out = [_instance_status(fleet, inst, state, pooled) for inst in fleet.instances]
        # Behind RDS Proxy only a counter of statements closes a gap.
        behind_proxy = read_setting(store, layout) is not None
        gaps = fleet.counter_gaps(watch, state.group, statements=behind_proxy)
        blind = fleet.unwatched()
    finally:
        fleet.close()
    return out + pooler, [*notes, *gaps], blind


def _instance_status(
    fleet: Fleet, inst: Instance, state: State, pooled: dict[str, tuple[PooledBackend, ...]]
) -> InstanceStatus:
    eng = fleet.engine(inst)
    try:
        return InstanceStatus(
            address=inst.address,
            source=inst.source,
            reachable=True,
            standby=eng.is_standby(),
            sessions={c: eng.sessions(u, pooled=pooled.get(u, ())) for c, u in state.users.items()},
            signals=eng.signals(),
        )
    except CredflipError as exc:
        eng.close()
        return InstanceStatus(inst.address, inst.source, reachable=False, error=str(exc))


def _pooler_status(
    fleet: Fleet, state: State
) -> tuple[list[InstanceStatus], dict[str, tuple[PooledBackend, ...]]]:
    """The env's PgBouncer as one more place the drain reads (its clients are each color's
    sessions there), and each user's server connections it keeps (which the instances'
    sessions leave out); nothing without one."""
    pooler = fleet.pooler
    if pooler is None:
        return [], {}
    try:
        views = {c: pooler.view(u) for c, u in state.users.items()}
    except CredflipError as exc:
        return [InstanceStatus(pooler.address, pooler.name, reachable=False, error=str(exc))], {}
    status = InstanceStatus(
        address=pooler.address,
        source=pooler.name,
        reachable=True,
        sessions={c: v.clients for c, v in views.items()},
        signals=pooler.signals(),
    )
    return [status], {state.users[c]: v.backends for c, v in views.items()}
