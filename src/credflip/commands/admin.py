"""The small commands: the admin URL, history, unlock, and the time format they share."""

from __future__ import annotations

import os
import time

from ..engines import Engine, engine_for
from ..errors import UsageError
from ..layout import Layout
from ..lock import LockInfo
from ..state import HistoryEntry, load_state, require_engine
from ..stores.base import Store
from ..urls import DbUrl


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
    text = store.get(layout.lock)
    if text is None:
        return None
    store.delete(layout.lock)
    # A takeover of this lock that died half-way left a claim: it is void now.
    store.drop_claim(layout.lock, text)
    return LockInfo.from_json(text)


def describe_time(ts: float) -> str:
    """A UTC timestamp for tables: ``2026-11-25 10:00:00Z``."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))
