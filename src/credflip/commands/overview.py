"""``status``: the env's colors, rotation, lock and history, and with an admin URL its instances."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..drain import Evidence
from ..engines import Engine, Sessions, UserState, engine_for
from ..errors import CredflipError, NotInitialized, UsageError
from ..halt import Halt, read_halt
from ..instances import format_address, parse_address
from ..layout import ROLES, Color, Layout
from ..legacy import LegacyLog, LegacyReport
from ..lock import LockInfo, read_lock
from ..poolers import PgBouncer
from ..poolers.rds_proxy import ProxySetting, read_setting
from ..rotation import env_pooler, read_pointer
from ..rotation.lease import Lease, read_lease
from ..rotation.watch import drain_policy
from ..state import HistoryEntry, Rotation, State, load_state
from ..stores.base import Store
from ..urls import DbUrl
from ..windows import parse_windows
from .signals import InstanceStatus, drain_report


@dataclass(frozen=True)
class ColorStatus:
    """One color as ``status`` reports it."""

    color: Color
    user: str
    active: bool
    writer_url: DbUrl | None
    reader_url: DbUrl | None
    user_state: UserState | None = None
    sessions: Sessions | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, passwords masked."""
        return {
            "color": self.color.value,
            "user": self.user,
            "active": self.active,
            "writer_url": str(self.writer_url) if self.writer_url else None,
            "reader_url": str(self.reader_url) if self.reader_url else None,
            "exists": self.user_state.exists if self.user_state else None,
            "can_login": self.user_state.can_login if self.user_state else None,
            "sessions": self.sessions.count if self.sessions else None,
            "clients": [
                {"client": g.client, "application": g.application, "count": g.count}
                for g in (self.sessions.groups if self.sessions else ())
            ],
        }


@dataclass(frozen=True)
class Status:
    """Everything ``credflip status`` shows."""

    env: str
    store: str
    engine: str
    active: Color
    colors: list[ColorStatus]
    rotation: Rotation | None
    lock: LockInfo | None
    history: list[HistoryEntry] = field(default_factory=list)
    database_error: str | None = None
    instances: list[InstanceStatus] = field(default_factory=list)
    counter_gaps: list[str] = field(default_factory=list)
    #: Wall-clock time before which the drain will not retire the old user.
    earliest_retire: float | None = None
    #: Replicas the servers report that no instance watches (they block the retire).
    unwatched: list[str] = field(default_factory=list)
    #: The env accepts draining on open sessions alone (``init --sessions-only``).
    sessions_only: bool = False
    #: Rights the admin lent itself in a run that died, not taken back yet.
    lease: Lease | None = None
    #: The env's RDS Proxy (``init --rds-proxy``), and the secrets it logs in with.
    rds_proxy: ProxySetting | None = None
    proxy_secrets: list[str] = field(default_factory=list)
    #: Why and since when the env is halted (None: it is not), and the failed
    #: rotations in a row so far (:mod:`credflip.halt`).
    halt: Halt | None = None
    failures: int = 0
    #: The window the env's rotator starts rotations in (``rotate --window``), if recorded.
    window: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, passwords masked."""
        return {
            "env": self.env,
            "store": self.store,
            "engine": self.engine,
            "active": self.active.value,
            "colors": [c.to_dict() for c in self.colors],
            "phase": self.rotation.phase.value if self.rotation else None,
            "rotation": self.rotation.to_dict() if self.rotation else None,
            "lock": (
                {
                    "owner": self.lock.owner,
                    "host": self.lock.host,
                    "pid": self.lock.pid,
                    "started_at": self.lock.started_at,
                    "purpose": self.lock.purpose,
                }
                if self.lock
                else None
            ),
            "history": [h.to_dict() for h in self.history],
            "lease": self.lease.to_dict() if self.lease else None,
            "rds_proxy": (
                {"name": p.name, "endpoint": p.endpoint, "secrets": self.proxy_secrets}
                if (p := self.rds_proxy)
                else None
            ),
            "halted": self.halt.to_dict() if self.halt else None,
            "failures": self.failures,
            "window": None if self.window is None else window_dict(self.window, time.time()),
            "database_error": self.database_error,
            "drain": {
                "signals": [
                    {"instance": i.address, **sig.to_dict()}
                    for i in self.instances
                    for sig in i.signals
                ],
                "instances": [i.to_dict() for i in self.instances],
                "counter_gaps": self.counter_gaps,
                "sessions_only": self.sessions_only,
                "earliest_retire": self.earliest_retire,
                "unwatched": self.unwatched,
                "legacy_user": self.legacy_user,
                "legacy_count": self.legacy.count,
                "legacy_clients": self.legacy.to_json(),
            },
        }

    @property
    def legacy(self) -> LegacyReport:
        """The clients the rotation's drain (or predrain) saw using :attr:`legacy_user`
        after the cache wait."""
        return LegacyLog.from_list(self.rotation.legacy if self.rotation else []).report()

    @property
    def legacy_user(self) -> str | None:
        """Whom the rotation drains: the old user, or while prepare drains the new color
        first (after a rollback), the new one."""
        rot = self.rotation
        if rot is None:
            return None
        color = drained_color(rot, self.active)
        return next(c.user for c in self.colors if c.color is color)


def window_dict(spec: str, now: float) -> dict[str, Any]:
    """A recorded window for ``--json``: whether open at *now*, and when it next opens
    (*now* while open; None when this credflip does not understand the spec)."""
    try:
        windows = parse_windows(spec)
    except UsageError:
        return {"spec": spec, "open": None, "next_opening": None}
    opening = windows.next_opening(now)
    return {"spec": spec, "open": opening == now, "next_opening": opening}


def drained_color(rotation: Rotation | None, active: Color) -> Color:
    """The color whose user a drain watches: the rotation's old one, or while prepare
    drains the new color first (after a rollback), the new one; with no rotation, the
    active one (the next rotation's old user)."""
    if rotation is None:
        return active
    return rotation.to_color if rotation.predraining else rotation.from_color


def earliest_retire(rotation: Rotation | None) -> float | None:
    """When the drain of *rotation* could retire the old user at the earliest (wall clock)."""
    if rotation is None or rotation.switched_at is None or rotation.client_ttl is None:
        return None
    policy = drain_policy(rotation)
    evidence = Evidence.from_dict(rotation.evidence)
    earliest = evidence.earliest_done(policy, rotation.switched_at)
    # The window began when the quiet did; in use at the last sample, it starts
    # over from there at the earliest.
    began = evidence.quiet_since if evidence.quiet_since is not None else evidence.sampled_at
    if began is not None:
        earliest = max(earliest, began + evidence.needed_quiet(policy))
    return earliest


def status(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl | None = None,
    engine: Engine | None = None,
    last: int = 5,
) -> Status:
    """Collect the env's state; with an admin URL also each instance's users, sessions, signals."""
    state = _load(store, layout)
    names = [*layout.resolver_names, layout.lease, layout.pooler_url, layout.rds_proxy]
    values = store.get_many([*names, layout.halted, layout.window])
    lease = values.pop(layout.lease, None)
    pooler = env_pooler(layout, values.pop(layout.pooler_url, None))
    proxy = read_setting(store, layout, values)
    active = read_pointer(store, layout)
    lock = read_lock(store, layout)
    # The counter gaps that matter are those of the user being drained.
    watch = state.users[drained_color(state.current, active)]
    asked = _ask_database(store, layout, state, admin_url, engine, watch)
    db, instances, gaps, blind, error = asked
    colors = _colors(layout, values, state, active, db, instances)
    if not instances:
        instances = _known_instances(colors, state, pooler)
    return Status(
        env=layout.env,
        store=store.url,
        engine=state.engine,
        active=active,
        colors=colors,
        rotation=state.current,
        lock=lock,
        history=state.history[-last:] if last else list(state.history),
        database_error=error,
        instances=instances,
        counter_gaps=gaps,
        earliest_retire=earliest_retire(state.current),
        unwatched=blind,
        sessions_only=state.sessions_only,
        lease=None if lease is None else Lease.from_json(lease, where=layout.lease),
        rds_proxy=proxy,
        proxy_secrets=[layout.proxy_secret(c) for c in Color] if proxy else [],
        halt=read_halt(values, layout),
        failures=state.failures,
        window=values.get(layout.window),
    )


def _ask_database(
    store: Store,
    layout: Layout,
    state: State,
    admin_url: DbUrl | None,
    engine: Engine | None,
    watch: str,
) -> tuple[dict[Color, UserState], list[InstanceStatus], list[str], list[str], str | None]:
    """Each user's state and what the drain sees on each instance, when there is an admin
    URL (or engine); the database's error, if it failed, in place of raising it."""
    db: dict[Color, UserState] = {}
    instances: list[InstanceStatus] = []
    gaps: list[str] = []
    blind: list[str] = []
    if admin_url is None and engine is None:
        return db, instances, gaps, blind, None
    own = engine is None
    try:
        eng = engine if engine is not None else engine_for(admin_url)  # type: ignore[arg-type]
        try:
            for color, user in state.users.items():
                db[color] = eng.user_state(user)
            instances, gaps, blind = drain_report(store, layout, state, eng, watch=watch)
        finally:
            if own:
                eng.close()
    except CredflipError as exc:
        return db, instances, gaps, blind, str(exc)
    return db, instances, gaps, blind, None


def _load(store: Store, layout: Layout) -> State:
    """The env's state; when there is none, say so naming a lease an ``init`` that died left."""
    try:
        return load_state(store, layout)
    except NotInitialized as exc:
        lease = read_lease(store, layout)
        if lease is None:
            raise
        raise NotInitialized(
            f"{exc}; an init that died left a lease: {lease.describe()}; run 'credflip init' "
            f"again with that admin: it takes it back first"
        ) from exc


def _colors(
    layout: Layout,
    values: dict[str, str],
    state: State,
    active: Color,
    db: dict[Color, UserState],
    instances: list[InstanceStatus],
) -> list[ColorStatus]:
    """Each color's user, URLs and (when the database answered) state and sessions."""
    colors = []
    for color in Color:
        urls = {}
        for role in ROLES:
            text = values.get(layout.url(color, role))
            urls[role] = DbUrl.parse(text, what=layout.url(color, role)) if text else None
        seen = [i.sessions[color] for i in instances if color in i.sessions]
        colors.append(
            ColorStatus(
                color=color,
                user=state.users.get(color, "?"),
                active=color is active,
                writer_url=urls["writer"],
                reader_url=urls["reader"],
                user_state=db.get(color),
                sessions=Sessions(tuple(g for s in seen for g in s.groups)) if seen else None,
            )
        )
    return colors


def _known_instances(
    colors: list[ColorStatus], state: State, pooler: PgBouncer | None
) -> list[InstanceStatus]:
    """Without the database: the instances the URLs and ``--instance`` name (a URL through
    the env's PgBouncer names PgBouncer)."""
    out: list[InstanceStatus] = []
    pairs = [
        (pooler.name if pooler and pooler.serves(url) else f"{c.color} {role} URL", url)
        for c in colors
        for role, url in (("writer", c.writer_url), ("reader", c.reader_url))
        if url is not None
    ]
    named = [(label, url.host, url.port) for label, url in pairs]
    named += [("--instance", *parse_address(text)) for text in state.instances]
    for source, host, port in named:
        address = format_address(host, port)
        if all(address != i.address for i in out):
            out.append(InstanceStatus(address, source))
    return out
