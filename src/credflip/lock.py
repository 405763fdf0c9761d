"""The environment's rotation lock: one process at a time rotates or rolls back.

``/db/{env}/rotation-lock`` exists only while a rotation or rollback runs. It
is written create-only, so exactly one process wins; a lock whose holder is
certainly gone (its process died on this host, or its declared expiry passed)
is taken over.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import CredflipError, LockHeld, ParameterExists, StoreError
from .layout import Layout
from .stores.base import Store

__all__ = ["LockInfo", "hold_lock", "pid_space", "read_lock"]


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
