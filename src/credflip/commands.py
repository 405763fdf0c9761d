"""The commands besides rotate and rollback: init, status, history, unlock.

Each is a plain function over a store and a layout that returns data and
raises :class:`~credflip.errors.CredflipError`; the CLI only formats.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .drain import DrainPolicy, Evidence
from .engines import Engine, Sessions, Signal, UserState, engine_for
from .errors import (
    ConfigurationError,
    CredflipError,
    UsageError,
)
from .instances import Fleet, Instance, format_address, parse_address
from .instances import normalize as normalize_instances
from .layout import ROLES, Color, Layout
from .legacy import LegacyLog, LegacyReport
from .lock import LockInfo, read_lock
from .rotation import Event, Notice, env_fleet, read_pointer
from .state import (
    HistoryEntry,
    Rotation,
    State,
    load_state,
    require_engine,
    save_state,
)
from .stores.base import Store
from .urls import DbUrl

__all__ = [
    "ColorStatus",
    "InitResult",
    "InstanceStatus",
    "Status",
    "admin_url_for",
    "enable_signals",
    "history",
    "init",
    "save_admin_url",
    "status",
    "unlock",
]


def admin_url_for(store: Store, layout: Layout, explicit: str | None = None) -> DbUrl:
    """The admin URL: *explicit*, else ``$CREDFLIP_ADMIN_URL``, else the store's parameter."""
    if explicit:
        return DbUrl.parse(explicit, what="--admin-url")
    from_env = os.environ.get("CREDFLIP_ADMIN_URL")
    if from_env:
        return DbUrl.parse(from_env, what="CREDFLIP_ADMIN_URL")
    stored = store.get(layout.admin_url)
    if stored:
        return DbUrl.parse(stored, what=layout.admin_url)
    raise UsageError(
        f"no admin URL: pass --admin-url, set CREDFLIP_ADMIN_URL, or store it in {layout.admin_url}"
    )


@dataclass(frozen=True)
class InitResult:
    """What :func:`init` set up."""

    active: Color
    users: dict[Color, str]
    group: str | None
    adopted: bool
    #: What each instance shows the drain (see :func:`drain_report`).
    instances: list[InstanceStatus] = field(default_factory=list)
    #: Why the drain could miss a short login; empty when every instance counts logins.
    counter_gaps: list[str] = field(default_factory=list)
    #: What init turned on (e.g. an extension it created).
    enabled: list[str] = field(default_factory=list)
    #: Replicas the servers report that no instance watches (see :meth:`Fleet.unwatched`).
    unwatched: list[str] = field(default_factory=list)
    #: The env accepts draining on open sessions alone where a counter is missing.
    sessions_only: bool = False


def init(
    store: Store,
    layout: Layout,
    *,
    admin_url: DbUrl,
    writer_url: DbUrl | None = None,
    reader_url: DbUrl | None = None,
    green_user: str | None = None,
    group_role: str | None = None,
    instances: tuple[str, ...] = (),
    sessions_only: bool = False,
    engine: Engine | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> InitResult:
    """Start managing an environment.

    With a single existing user (``writer_url``), that user becomes blue and
    ``<user>_green`` (or *green_user*) is created without login. When the
    pointer and both colors' URLs were already set up by hand, they are
    adopted after checking that they connect. An env credflip already
    manages is refused.

    Init turns on the login counters the admin may turn on, on every
    instance. *sessions_only* stores the operator's acceptance of draining on
    open sessions alone where an instance still has none (``rotate`` refuses
    there otherwise).
    """
    names = [*layout.resolver_names, layout.state]
    existing = store.get_many(names)
    if layout.state in existing:
        raise ConfigurationError(
            f"env {layout.env!r} is already managed by credflip in {store.url}; use "
            f"'credflip status' or 'credflip rotate'"
        )
    stored = normalize_instances([], instances)
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    try:
        hand_made = layout.pointer in existing and all(
            layout.url(c, "writer") in existing for c in Color
        )
        if hand_made:
            result = _adopt_hand_made(store, layout, eng, existing, group_role, stored, on_event)
        else:
            result = _adopt_single_user(
                store, layout, eng, existing, writer_url, reader_url, green_user, group_role, stored
            )
        state = load_state(store, layout)
        if sessions_only:
            state.sessions_only = True
            save_state(store, layout, state)
        # What the drain will see: turn on what the admin may, report the rest.
        enabled = enable_signals(store, layout, state, eng)
        report, gaps, blind = drain_report(
            store, layout, state, eng, watch=state.users[result.active]
        )
        return dataclasses.replace(
            result,
            instances=report,
            counter_gaps=gaps,
            enabled=enabled,
            sessions_only=state.sessions_only,
            unwatched=blind,
        )
    finally:
        if own_engine:
            eng.close()


def _adopt_single_user(
    store: Store,
    layout: Layout,
    eng: Engine,
    existing: dict[str, str],
    writer_url: DbUrl | None,
    reader_url: DbUrl | None,
    green_user: str | None,
    group_role: str | None,
    stored: list[str],
) -> InitResult:
    if writer_url is None:
        raise UsageError("--writer-url is required: the URL the application uses today")
    reader_url = reader_url or writer_url
    for what, url in (("--writer-url", writer_url), ("--reader-url", reader_url)):
        if not url.user or url.password is None:
            raise UsageError(f"{what} must hold the user and password the application uses")
        if url.backend not in type(eng).schemes:
            raise UsageError(
                f"{what} is {url.backend} but the admin URL is {eng.name}: both must name the "
                f"same server"
            )
    if reader_url.user != writer_url.user:
        raise UsageError(
            f"--reader-url logs in as {reader_url.user!r} but --writer-url as "
            f"{writer_url.user!r}: a color is one login user"
        )
    user = writer_url.user
    green = green_user or f"{user}_green"
    if green == user:
        raise UsageError("--green-user must differ from the existing user")
    if layout.pointer in existing:
        # A previous init stopped half way; continue it only for the same user.
        color = Color.parse(existing[layout.pointer], where=f"pointer {layout.pointer}")
        prior = existing.get(layout.url(color, "writer"))
        if prior is None or DbUrl.parse(prior, what=layout.url(color, "writer")).user != user:
            raise ConfigurationError(
                f"{layout.pointer} already exists for another setup: delete it, or set both "
                f"colors' URLs by hand so init can adopt them"
            )
    eng.check_admin()
    for url in (writer_url, reader_url):
        eng.verify(url)
    group = eng.adopt(active=user, inactive=green, group=group_role)
    eng.lock_user(green)
    store.put(layout.url(Color.BLUE, "writer"), writer_url.secret, secure=True)
    store.put(layout.url(Color.BLUE, "reader"), reader_url.secret, secure=True)
    store.put(layout.pointer, Color.BLUE.value, secure=False)
    state = State(
        engine=eng.name,
        users={Color.BLUE: user, Color.GREEN: green},
        group=group,
        instances=stored,
    )
    save_state(store, layout, state)
    return InitResult(Color.BLUE, dict(state.users), group, adopted=False)


def _adopt_hand_made(
    store: Store,
    layout: Layout,
    eng: Engine,
    existing: dict[str, str],
    group_role: str | None,
    stored: list[str],
    on_event: Callable[[Event], None] | None,
) -> InitResult:
    active = Color.parse(existing[layout.pointer], where=f"pointer {layout.pointer}")
    users: dict[Color, str] = {}
    eng.check_admin()
    for color in Color:
        urls = {}
        for role in ROLES:
            name = layout.url(color, role)
            text = existing.get(name) or existing[layout.url(color, "writer")]
            urls[role] = DbUrl.parse(text, what=name)
        if urls["reader"].user != urls["writer"].user:
            raise ConfigurationError(
                f"{color} URLs log in as two users ({urls['writer'].user!r}, "
                f"{urls['reader'].user!r}): a color is one login user; fix them first"
            )
        for role, url in urls.items():
            try:
                eng.verify(url)
            except CredflipError as exc:
                raise ConfigurationError(
                    f"cannot adopt env {layout.env!r}: the {color} {role} URL ({url}) does not "
                    f"connect: {exc}"
                ) from exc
        users[color] = urls["writer"].user
        if layout.url(color, "reader") not in existing:
            store.put(layout.url(color, "reader"), urls["writer"].secret, secure=True)
            if on_event:
                on_event(
                    Notice(f"{layout.url(color, 'reader')} was missing: set to the writer URL")
                )
    if users[Color.BLUE] == users[Color.GREEN]:
        raise ConfigurationError(
            f"both colors log in as {users[Color.BLUE]!r}: blue and green must be two users"
        )
    group = eng.adopt(active=users[active], inactive=users[active.other], group=group_role)
    state = State(engine=eng.name, users=users, group=group, instances=stored)
    save_state(store, layout, state)
    return InitResult(active, users, group, adopted=True)


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "address": self.address,
            "source": self.source,
            "reachable": self.reachable,
            "role": None if self.standby is None else ("standby" if self.standby else "primary"),
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
        out = [_instance_status(fleet, inst, state) for inst in fleet.instances]
        gaps = fleet.counter_gaps(watch, state.group)
        blind = fleet.unwatched()
    finally:
        fleet.close()
    return out, [*notes, *gaps], blind


def _instance_status(fleet: Fleet, inst: Instance, state: State) -> InstanceStatus:
    eng = fleet.engine(inst)
    try:
        return InstanceStatus(
            address=inst.address,
            source=inst.source,
            reachable=True,
            standby=eng.is_standby(),
            sessions={c: eng.sessions(u) for c, u in state.users.items()},
            signals=eng.signals(),
        )
    except CredflipError as exc:
        eng.close()
        return InstanceStatus(inst.address, inst.source, reachable=False, error=str(exc))


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
                "legacy_count": self.legacy.count,
                "legacy_clients": self.legacy.to_json(),
            },
        }

    @property
    def legacy(self) -> LegacyReport:
        """The clients the rotation's drain saw using the old user after the cache wait."""
        return LegacyLog.from_list(self.rotation.legacy if self.rotation else []).report()


def earliest_retire(rotation: Rotation | None) -> float | None:
    """When the drain of *rotation* could retire the old user at the earliest (wall clock)."""
    if rotation is None or rotation.switched_at is None or rotation.client_ttl is None:
        return None
    policy = DrainPolicy(
        client_ttl=rotation.client_ttl, quiet=rotation.quiet, min_drain=rotation.min_drain or 0.0
    )
    evidence = Evidence.from_dict(rotation.evidence)
    earliest = policy.earliest_done(
        rotation.switched_at, evidence.longest_gap, evidence.pauses, evidence.pause_sum
    )
    if evidence.quiet_since is not None:
        needed = policy.needed_quiet(evidence.longest_gap, evidence.pauses, evidence.pause_sum)
        earliest = max(earliest, evidence.quiet_since + needed)
    elif evidence.sampled_at is not None:
        # In use at the last sample: the window starts over from there at the earliest.
        needed = policy.needed_quiet(evidence.longest_gap, evidence.pauses, evidence.pause_sum)
        earliest = max(earliest, evidence.sampled_at + needed)
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
    state = load_state(store, layout)
    values = store.get_many(layout.resolver_names)
    active = read_pointer(store, layout)
    lock = read_lock(store, layout)
    db: dict[Color, UserState] = {}
    instances: list[InstanceStatus] = []
    gaps: list[str] = []
    blind: list[str] = []
    error: str | None = None
    cur = state.current
    watch = state.users[cur.from_color if cur is not None else active]
    if admin_url is not None or engine is not None:
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
            error = str(exc)
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
    if not instances:
        instances = _known_instances(colors, state)
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
    )


def _known_instances(colors: list[ColorStatus], state: State) -> list[InstanceStatus]:
    """Without the database: the instances the URLs and ``--instance`` name."""
    out: list[InstanceStatus] = []
    pairs = [
        (f"{c.color} {role} URL", url)
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


def save_admin_url(
    store: Store, layout: Layout, *, admin_url: DbUrl, engine: Engine | None = None
) -> None:
    """Store *admin_url* as the env's SecureString ``admin-db-url``, once it proves itself.

    It must connect, be the env's engine and have the rights the admin needs;
    SSM encrypts it with the store's KMS key, the SQLite file is owner-only.
    """
    state = load_state(store, layout)
    if admin_url.password is None:
        raise UsageError("the admin URL holds no password: give user:password@host")
    own = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    try:
        require_engine(state, eng.name, layout)
        eng.check_admin()
    finally:
        if own:
            eng.close()
    store.put(layout.admin_url, admin_url.secret, secure=True)


def history(store: Store, layout: Layout) -> list[HistoryEntry]:
    """Every recorded rotation and rollback, oldest first."""
    return list(load_state(store, layout).history)


def unlock(store: Store, layout: Layout, *, force: bool) -> LockInfo | None:
    """Break the env's rotation lock; return who held it (None when free).

    Only with *force*: the lock may belong to a rotation that is still running
    on another machine.
    """
    if not force:
        raise UsageError(
            "unlock breaks a lock another rotation may still hold: add --force if you are sure "
            "it is dead"
        )
    load_state(store, layout)
    held = read_lock(store, layout)
    if held is not None:
        store.delete(layout.lock)
    return held


def describe_time(ts: float) -> str:
    """A UTC timestamp for tables: ``2026-11-25 10:00:00Z``."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))
