"""The admin's lease in the store: the rights it lent itself and has not taken back yet.

``/db/{env}/admin-lease`` (a String, JSON) is written before the admin grants
itself a right for a moment (PostgreSQL: a membership for ``REASSIGN OWNED``,
see :mod:`credflip.engines.lease`) and removed once it took the right back.
It lives beside the rotation record rather than in it: ``init`` lends itself
rights before that record exists, and a crashed ``init`` must stay one that a
second ``init`` finishes.

Every command that changes the database as admin (``init``, ``rotate`` and
its retire, ``rollback``) first takes back a lease it finds
(:meth:`LeaseKeeper.settle`): it revokes what the catalog shows of what the
lease names, so a grant that never ran costs nothing, and a membership the
admin held before was never named. ``status`` and ``rotate --dry-run`` name
an outstanding lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..engines import Engine, Lent, UserAdmin
from ..errors import ConfigurationError
from ..layout import Layout
from ..stores.base import Store
from ..urls import DbUrl

__all__ = ["Lease", "LeaseKeeper", "keeping_leases", "read_lease", "require_lessee"]

LEASE_VERSION = 1


@dataclass(frozen=True)
class Lease:
    """What an admin lent itself, where, and which run did."""

    admin: str
    #: ``host:port`` of the admin URL the run used.
    server: str
    rights: tuple[Lent, ...]
    since: float
    #: The command that lent them: ``init``, ``rotate``, ``rollback``.
    by: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "admin": self.admin,
            "server": self.server,
            "rights": [{"role": r.role, "option": r.option} for r in self.rights],
            "since": round(self.since, 3),
            "by": self.by,
            "host": self.host,
            "pid": self.pid,
        }

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"version": LEASE_VERSION, **self.to_dict()}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, where: str) -> Lease:
        """Parse the stored form; raise :class:`ConfigurationError` when it is damaged."""
        try:
            data = json.loads(text)
            return cls(
                admin=str(data["admin"]),
                server=str(data["server"]),
                rights=tuple(Lent(str(r["role"]), str(r["option"])) for r in data["rights"]),
                since=float(data["since"]),
                by=str(data["by"]),
                host=str(data.get("host") or "?"),
                pid=int(data.get("pid") or 0),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"{where} is not a valid lease ({type(exc).__name__}): look at what the admin "
                f"holds that it granted itself, take back what credflip lent it, then delete "
                f"{where}"
            ) from exc

    def describe(self) -> str:
        """``admin 'x' holds membership in app, SET on app_owner on db:5432, lent itself by
        rotate (pid 4242 on host-1) at 2026-11-25 10:00:00Z`` — for messages."""
        rights = ", ".join(r.describe() for r in self.rights)
        at = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.since))
        return (
            f"admin {self.admin!r} holds {rights} on {self.server}, lent itself by {self.by} "
            f"(pid {self.pid} on {self.host}) at {at}"
        )


def read_lease(store: Store, layout: Layout) -> Lease | None:
    """The env's outstanding lease, if any."""
    text = store.get(layout.lease)
    return None if text is None else Lease.from_json(text, where=layout.lease)


def require_lessee(lease: Lease, admin_url: DbUrl, layout: Layout) -> None:
    """Refuse another admin than the one that lent itself *lease*: only it can take it back."""
    if lease.admin != admin_url.user:
        raise ConfigurationError(
            f"{lease.describe()}, in a run that died before taking it back; only that admin "
            f"can: run this command once with its admin URL (or take back by hand what it "
            f"granted itself of that, then delete {layout.lease})"
        )


def _server(url: DbUrl) -> str:
    return f"{url.host}:{url.port}" if url.port else url.host


class LeaseKeeper:
    """The env's lease as one command keeps it: the :class:`~credflip.engines.LeaseBook`
    of its engine, and :meth:`settle` to take back what a run that died left."""

    def __init__(
        self,
        store: Store,
        layout: Layout,
        admin_url: DbUrl,
        *,
        by: str,
        notice: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.store, self.layout, self.admin_url = store, layout, admin_url
        self.by, self.notice = by, notice
        #: What this command recorded and has not cleared, since when.
        self.outstanding: tuple[Lent, ...] = ()
        self._since: float | None = None

    def record(self, rights: Sequence[Lent]) -> None:
        """Record *rights* (with any still outstanding) before they are granted."""
        self._write(tuple(dict.fromkeys((*self.outstanding, *rights))))

    def clear(self, rights: Sequence[Lent]) -> None:
        """*rights* were taken back: record what is left, or remove the lease."""
        self._write(tuple(r for r in self.outstanding if r not in rights))

    def _write(self, rights: tuple[Lent, ...]) -> None:
        if rights:
            since = self._since = self._since or time.time()
            lease = Lease(self.admin_url.user, _server(self.admin_url), rights, since, self.by)
            self.store.put(self.layout.lease, lease.to_json(), secure=False)
        elif self.outstanding:
            self.store.delete(self.layout.lease)
        if not rights:
            self._since = None
        self.outstanding = rights

    def settle(self, admin: UserAdmin) -> Lease | None:
        """Take back what the env's lease names, as far as the admin still holds it, then
        remove the lease; return it (None when there was none). Refused when another
        admin lent it: only that one can take it back."""
        lease = read_lease(self.store, self.layout)
        if lease is None:
            self.outstanding, self._since = (), None
            return None
        require_lessee(lease, self.admin_url, self.layout)
        admin.execute(admin.plan_take_back(lease.rights))
        self.store.delete(self.layout.lease)
        self.outstanding, self._since = (), None
        self.notice(f"took back what a run that died left: {lease.describe()}")
        return lease


@contextlib.contextmanager
def keeping_leases(
    engine: Engine,
    store: Store,
    layout: Layout,
    *,
    by: str,
    notice: Callable[[str], None] = lambda _m: None,
) -> Iterator[LeaseKeeper]:
    """While the block runs, what *engine* lends its admin is recorded in *layout*'s env."""
    keeper = LeaseKeeper(store, layout, engine.admin_url, by=by, notice=notice)
    before, engine.leases = engine.leases, keeper
    try:
        yield keeper
    finally:
        engine.leases = before
