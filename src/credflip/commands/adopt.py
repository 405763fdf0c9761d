"""``init``: start managing an environment, from one existing user or a hand-made pair."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engines import Engine, engine_for
from ..errors import ConfigurationError, CredflipError, UsageError
from ..instances import normalize as normalize_instances
from ..layout import ROLES, Color, Layout
from ..poolers.rds_proxy import RdsProxy, attach, validate_name
from ..rotation import Event, Notice, new_password
from ..rotation.lease import keeping_leases
from ..state import State, load_state, save_state
from ..stores.base import Store
from ..urls import DbUrl
from .pooler import check_pooler
from .signals import InstanceStatus, drain_report, enable_signals


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
    #: The env's RDS Proxy (it lists both colors' secrets), or None.
    rds_proxy: str | None = None
    #: The Secrets Manager secrets it logs in with, by color.
    proxy_secrets: dict[Color, str] = field(default_factory=dict)


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
    lock_timeout: float | None = None,
    rds_proxy: str | None = None,
    rds_proxy_endpoint: str | None = None,
    pooler_url: DbUrl | None = None,
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
    there otherwise). *lock_timeout*: how long one statement may wait for a lock an
    application's session holds (default: the engine's, 1 s); ``REASSIGN OWNED``
    needs one on every table it moves. *pooler_url*: the console of the PgBouncer the
    colors' URLs go through, kept as a SecureString once it answers. *rds_proxy*: see
    :func:`_behind_proxy`.
    """
    existing = _unmanaged(store, layout, on_event)
    stored = normalize_instances([], instances)
    own_engine = engine is None
    eng = engine if engine is not None else engine_for(admin_url)
    try:
        _ready(eng, lock_timeout, pooler_url, admin_url)
        hand_made = _hand_made(layout, existing)
        proxy = _behind_proxy(store, layout, eng, existing, hand_made, writer_url, green_user,
                              (rds_proxy, rds_proxy_endpoint))  # fmt: skip
        with eng.lock_phase():  # one phase: its plans share one lock budget
            with keeping_leases(eng, store, layout, by="init", notice=_noticer(on_event)) as lent:
                lent.settle(eng)  # what an init that died lent the admin
                result = (
                    _adopt_hand_made(store, layout, eng, existing, group_role, stored, on_event)
                    if hand_made
                    else _adopt_single_user(
                        store, layout, eng, existing, writer_url, reader_url, green_user,
                        group_role, stored,
                    )
                )  # fmt: skip
            result = _record_proxy(store, layout, proxy, result)
            return _survey(store, layout, eng, result, sessions_only, pooler_url)
    finally:
        if own_engine:
            eng.close()


def _ready(
    eng: Engine, lock_timeout: float | None, pooler_url: DbUrl | None, admin_url: DbUrl
) -> None:
    """Give the engine the lock timeout asked for, and check the PgBouncer console named."""
    if lock_timeout is not None:
        eng.lock_wait = dataclasses.replace(eng.lock_wait, timeout=lock_timeout)
    if pooler_url is not None:
        check_pooler(pooler_url, engine=eng.name, admin_url=admin_url)


def _unmanaged(
    store: Store, layout: Layout, on_event: Callable[[Event], None] | None
) -> dict[str, str]:
    """The env's parameters; refused when credflip already manages it."""
    existing = store.get_many([*layout.resolver_names, layout.state])
    if layout.state in existing:
        raise ConfigurationError(
            f"env {layout.env!r} is already managed by credflip in {store.url}; use "
            f"'credflip status' or 'credflip rotate'"
        )
    if on_event is not None:
        _warn_other_keys(store, layout, on_event)
    return existing


def _logins(
    layout: Layout,
    existing: dict[str, str],
    hand_made: bool,
    writer_url: DbUrl | None,
    green_user: str | None,
) -> tuple[dict[Color, DbUrl], list[Color]]:
    """Each color's login for its RDS Proxy secret, and the colors whose login works today:
    the hand-made URLs (both), or the existing user as blue and green with a password
    nobody uses (green is locked until its first rotation writes its own)."""
    if hand_made:
        urls = {c: layout.url(c, "writer") for c in Color}
        return {c: DbUrl.parse(existing[n], what=n) for c, n in urls.items()}, list(Color)
    if writer_url is None:
        raise UsageError("--writer-url is required: the URL the application uses today")
    green = writer_url.with_credentials(green_user or f"{writer_url.user}_green", new_password())
    return {Color.BLUE: writer_url, Color.GREEN: green}, [Color.BLUE]


def _hand_made(layout: Layout, existing: dict[str, str]) -> bool:
    """Whether the pointer and both colors' writer URLs were set up by hand."""
    return layout.pointer in existing and all(layout.url(c, "writer") in existing for c in Color)


def _behind_proxy(
    store: Store,
    layout: Layout,
    eng: Engine,
    existing: dict[str, str],
    hand_made: bool,
    writer_url: DbUrl | None,
    green_user: str | None,
    proxy: tuple[str | None, str | None],
) -> RdsProxy | None:
    """With RDS Proxy *proxy* (name, endpoint clients reach it at: None for its own):
    before the adoption changes anything, write both colors' secrets and check that the
    proxy lists them (else stop with the ``aws rds modify-db-proxy`` that registers
    them). The logins that work today are proven first: a secret the proxy already
    lists must never get a wrong password."""
    name, endpoint = proxy
    if name is None:
        return None
    validate_name(name)
    logins, working = _logins(layout, existing, hand_made, writer_url, green_user)
    for color in working:
        eng.verify(logins[color])
    return attach(
        store,
        layout,
        name,
        engine=eng.name,
        endpoint=endpoint,
        urls=logins,
        direct=eng.admin_url,
        done="nothing else was changed",
    )


def _record_proxy(
    store: Store, layout: Layout, proxy: RdsProxy | None, result: InitResult
) -> InitResult:
    """Keep the env's proxy (if any) once the adoption is done, and say so in *result*."""
    if proxy is None:
        return result
    store.put(layout.rds_proxy, proxy.setting.to_json(), secure=False)
    secrets = {c: proxy.secrets.name(c) for c in Color}
    return dataclasses.replace(result, rds_proxy=proxy.name, proxy_secrets=secrets)


def _noticer(on_event: Callable[[Event], None] | None) -> Callable[[str], None]:
    return (lambda _m: None) if on_event is None else (lambda m: on_event(Notice(m)))


def _warn_other_keys(store: Store, layout: Layout, on_event: Callable[[Event], None]) -> None:
    """One warning when the env's secure values (every SecureString credflip writes: the
    colors' URLs, the admin's and the pooler's URLs, the SCRAM verifiers) are under another
    key than the store's."""
    names = [
        *(layout.url(c, r) for c in Color for r in ROLES),
        layout.admin_url,
        layout.pooler_url,
        *(layout.verifier(c) for c in Color),
    ]
    other = store.other_keys(names)
    if not other:
        return
    first = next(iter(other))
    what = f"{first} and {len(other) - 1} more are" if len(other) > 1 else f"{first} is"
    on_event(
        Notice(
            f"{what} encrypted with key {', '.join(sorted(set(other.values())))}, but this "
            f"store writes with {store.write_key}: every secure value credflip writes moves to "
            f"{store.write_key}; to keep the key, name it in --store (kms_key_id=KEY)",
            level="warning",
        )
    )


def _survey(
    store: Store,
    layout: Layout,
    eng: Engine,
    result: InitResult,
    sessions_only: bool,
    pooler_url: DbUrl | None,
) -> InitResult:
    """After the adoption: record *sessions_only* and the pooler, then what the drain will
    see."""
    if pooler_url is not None:
        store.put(layout.pooler_url, pooler_url.secret, secure=True)
    state = load_state(store, layout)
    if sessions_only:
        state.sessions_only = True
        save_state(store, layout, state)
    # What the drain will see: turn on what the admin may, report the rest.
    enabled = enable_signals(store, layout, state, eng)
    report, gaps, blind = drain_report(store, layout, state, eng, watch=state.users[result.active])
    return dataclasses.replace(
        result,
        instances=report,
        counter_gaps=gaps,
        enabled=enabled,
        sessions_only=state.sessions_only,
        unwatched=blind,
    )


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
