"""The environment's rotation lock: one process at a time rotates or rolls back.

``/db/{env}/rotation-lock`` exists only while a rotation or rollback runs. It
is written create-only, so exactly one process wins; a lock whose holder is
certainly gone (its process died on this host, or its declared expiry passed)
is taken over with :meth:`Store.replace_if <credflip.stores.base.Store.replace_if>`,
so that of two processes taking over the same stale lock only one does.

The lock is fenced: the holder writes to the store through a
:class:`FencedStore`, which checks before every write that the lock is still
its own, so a run whose lock was taken over stops before its next write.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .actor import login_name
from .errors import CredflipError, LockHeld, LockLost, ParameterExists, StoreError
from .layout import Layout
from .stores.base import Store

__all__ = ["FencedStore", "LockInfo", "hold_lock", "pid_space", "read_lock"]


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
        return cls(
            owner=login_name(),
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
                expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
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
    stale = _acquire(store, layout, mine, notice)
    # Only our own lock is deleted: if it was broken with --force and someone
    # else took it, theirs must survive our exit.
    try:
        yield mine
    except BaseException:
        # The error in flight is what the caller must see (a drain timeout
        # stays exit 4); a store that also fails to release is reported aside.
        try:
            _release(store, layout, mine, stale)
        except CredflipError as exc:
            notice(
                f"could not release the lock ({exc}); once nothing runs, run 'credflip unlock "
                f"--env {layout.env} --force'"
            )
        raise
    try:
        _release(store, layout, mine, stale)
    except CredflipError as exc:
        raise StoreError(
            f"the {purpose} itself finished, but releasing the lock failed ({exc}); run "
            f"'credflip unlock --env {layout.env} --force'"
        ) from exc


def _acquire(
    store: Store, layout: Layout, mine: LockInfo, notice: Callable[[str], None]
) -> str | None:
    """Take the lock, or raise :class:`LockHeld`; return the stale lock taken over, if any."""
    text = mine.to_json()
    held_text: str | None = None
    for _attempt in range(2):  # a second time when the holder released it meanwhile
        try:
            store.put(layout.lock, text, secure=False, overwrite=False)
            return None
        except ParameterExists:
            held_text = store.get(layout.lock)
        if held_text is not None:
            break
    if held_text is None:
        raise _held(layout, None)
    if held_text == text:
        # Our own write: the store applied it but its reply was lost, and the
        # client's retry (botocore's) found the lock it had just created.
        return None
    held = LockInfo.from_json(held_text)
    if not held.is_stale_here():
        raise _held(layout, held)
    # Every process that found the same stale lock tries; the store lets one through.
    if store.replace_if(layout.lock, held_text, text):
        notice(f"took over a stale lock: {held.describe()} (its holder is gone)")
        return held_text
    latest = store.get(layout.lock)
    if latest == held_text:
        raise LockHeld(
            f"another process is taking over the stale lock of env {layout.env!r} "
            f"({held.describe()}); if none is, run 'credflip unlock --env {layout.env} --force'"
        )
    raise _held(layout, None if latest is None else LockInfo.from_json(latest))


def _held(layout: Layout, held: LockInfo | None) -> LockHeld:
    holder = held.describe() if held else "a process that just released it"
    return LockHeld(
        f"another {held.purpose if held else 'rotation'} of env {layout.env!r} holds "
        f"the lock: {holder}; wait for it to finish, or if it died run "
        f"'credflip unlock --env {layout.env} --force'"
    )


def _release(store: Store, layout: Layout, mine: LockInfo, stale: str | None) -> None:
    """Delete our lock (only ours); drop the claim of the stale lock taken over."""
    store.delete_if(layout.lock, mine.to_json())
    if stale is not None:
        # No process can still be about to take over that lock: it is long gone.
        # A claim left behind only takes room (the stale value never comes back).
        with contextlib.suppress(CredflipError):
            store.drop_claim(layout.lock, stale)


class FencedStore(Store):
    """*store* as the holder of the env's lock writes to it: each write (and delete) first
    checks that the lock is still the holder's, else raises :class:`LockLost`.

    A run whose lock was taken over, or broken with ``unlock --force``, thus stops
    before it writes anything more. The check and the write are two calls: a
    takeover between them is caught at the next write.
    """

    def __init__(self, store: Store, layout: Layout, mine: LockInfo) -> None:
        self.inner = store
        self.layout = layout
        self.mine = mine
        self.scheme = store.scheme

    @property
    def url(self) -> str:
        """The wrapped store's URL."""
        return self.inner.url

    @property
    def write_key(self) -> str | None:
        """The wrapped store's key."""
        return self.inner.write_key

    def other_keys(self, names: Sequence[str]) -> dict[str, str]:
        """As the wrapped store answers."""
        return self.inner.other_keys(names)

    def check(self, before: str) -> None:
        """Raise :class:`LockLost` unless the lock is still ours (*before*: what we were
        about to write)."""
        text = self.inner.get(self.layout.lock)
        held = None if text is None else LockInfo.from_json(text)
        if held is not None and held.token == self.mine.token:
            return
        env, purpose = self.layout.env, self.mine.purpose
        how = (
            "was broken with 'credflip unlock --force'"
            if held is None
            else f"was taken over by {held.describe()}"
        )
        raise LockLost(
            f"the lock of env {env!r} {how} while this {purpose} ran: it stopped before "
            f"writing {before}, leaving the rotation as recorded for whoever holds the lock "
            f"now ('credflip status --env {env}' shows where it is)"
        )

    def _get_many(self, names: list[str]) -> dict[str, str]:
        return self.inner.get_many(names)

    def _get_path(self, folder: str, *, secure: bool) -> dict[str, str]:
        return self.inner.get_path(folder, secure=secure)

    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool) -> None:
        self.check(name)
        self.inner.put(name, value, secure=secure, overwrite=overwrite)

    def _delete(self, name: str) -> bool:
        self.check(name)
        return self.inner.delete(name)

    def delete_if(self, name: str, value: str) -> bool:
        """Delete *name* while it holds *value*, and while the lock is ours."""
        self.check(name)
        return self.inner.delete_if(name, value)

    def close(self) -> None:
        """Nothing: whoever opened the wrapped store closes it."""
