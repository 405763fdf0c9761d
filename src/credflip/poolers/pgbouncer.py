"""A PgBouncer in front of an env's PostgreSQL: what it adds to init, verify, drain and retire.

- **init** registers it with the console URL
  (``pgbouncer://USER:PASSWORD@HOST:PORT/pgbouncer``, a ``stats_users`` user is
  enough); the colors' URLs name PgBouncer's address, which is then the
  pooler, not an instance the drain reaches with the admin's login.
- **verify** logs in through it as well as directly.
- **drain**: :meth:`PgBouncer.observe` (its clients of the old user are use, its
  server connections of the old user are not, a request on one is, see
  :mod:`.view`).
- **retire**: :meth:`PgBouncer.backends` names the server connections the
  server must end, so that the old user is gone from PgBouncer too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable
from typing import NamedTuple

from ..engines.values import Observation, PooledBackend, Signal
from ..errors import ConfigurationError, UsageError
from ..urls import DbUrl
from .console import Console
from .view import SIGNAL, UserView, user_view

__all__ = ["DEFAULT_PORT", "PgBouncer", "parse_pooler_url"]

#: PgBouncer's default listen port.
DEFAULT_PORT = 6432
SCHEME = "pgbouncer"


def parse_pooler_url(text: str, *, what: str = "--pooler") -> DbUrl:
    """``pgbouncer://USER:PASSWORD@HOST[:PORT][/pgbouncer]``, with the port and the
    console database filled in; refused (never repeating *text*) otherwise."""
    url = DbUrl.parse(text, what=what)
    if url.scheme != SCHEME:
        raise UsageError(
            f"{what} must be PgBouncer's console, pgbouncer://USER:PASSWORD@HOST:PORT/pgbouncer "
            f"(RDS Proxy is named with --rds-proxy)"
        )
    if url.database not in ("", "pgbouncer"):
        raise UsageError(f"{what} must name the console database 'pgbouncer', not another one")
    if not url.user:
        raise UsageError(f"{what} has no user: name one of PgBouncer's stats_users")
    return dataclasses.replace(url, port=url.port or DEFAULT_PORT, database="pgbouncer")


class Observed(NamedTuple):
    """What :meth:`PgBouncer.observe` read of one user."""

    observation: Observation
    #: Its server connections, as the server sees them.
    backends: tuple[PooledBackend, ...]
    #: Why this sample is no quiet (connections closed since the last one).
    unknown: tuple[str, ...]
    #: Each server connection as :data:`~.view.SERVER_FIELDS`, for the drain's next run.
    servers: tuple[tuple[str, ...], ...]


class PgBouncer:
    """One PgBouncer, read through its admin console."""

    name = "pgbouncer"

    def __init__(self, url: DbUrl, *, console: Console | None = None) -> None:
        self.url = url
        self.console = console if console is not None else Console(url)
        #: The newest request seen on each user's server connections in this run: a
        #: connection PgBouncer closes (idle timeout) takes no use back.
        self._newest: dict[str, str] = {}
        #: Each user's server connections at the last sample.
        self._servers: dict[str, frozenset[PooledBackend]] = {}

    @property
    def host(self) -> str:
        return self.url.host.lower()

    @property
    def port(self) -> int:
        return self.url.port or DEFAULT_PORT

    @property
    def address(self) -> str:
        """``host:port`` where clients reach PgBouncer."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """How the drain, ``status`` and messages name it."""
        return f"pgbouncer {self.address}"

    def serves(self, url: DbUrl) -> bool:
        """Whether *url* goes through this PgBouncer (it names its host and port)."""
        return url.host.lower() == self.host and (url.port or 5432) == self.port

    # -- the console ---------------------------------------------------------

    def check(self) -> str:
        """PgBouncer's version, once its console answers this user's ``SHOW``."""
        rows = self.console.show("VERSION")
        version = str(next(iter(rows[0].values()))) if rows and rows[0] else ""
        if "pgbouncer" not in version.lower():
            raise ConfigurationError(
                f"{self.address} answered like a console but is not PgBouncer ({version[:60]!r})"
            )
        return version

    def backend_database(self, name: str) -> str:
        """The server's database that PgBouncer's database *name* goes to (its
        ``[databases]`` entry may rename it); *name* itself when it has no entry of its own."""
        for row in self.console.show("DATABASES"):
            if row.get("name") == name and row.get("database"):
                return str(row["database"])
        return name

    def view(self, user: str) -> UserView:
        """*user* on this PgBouncer now: servers first, then clients (the clock)."""
        servers = self.console.show("SERVERS")
        clients = self.console.show("CLIENTS")
        return user_view(user, clients, servers, wall_now=time.time())

    def backends(self, user: str) -> tuple[PooledBackend, ...]:
        """*user*'s server connections, as the server sees them."""
        return user_view(user, (), self.console.show("SERVERS"), wall_now=time.time()).backends

    def signals(self) -> list[Signal]:
        """What the drain reads here."""
        return [
            Signal(
                "pgbouncer clients",
                cumulative=False,
                available=True,
                detail="SHOW CLIENTS: applications connected to PgBouncer as the user",
            ),
            Signal(
                SIGNAL,
                cumulative=True,
                available=True,
                detail="SHOW SERVERS: a request on one of the user's server connections, even "
                "from a client that came and went between two samples",
            ),
        ]

    def observe(self, user: str) -> Observed:
        """*user*'s clients (its sessions here) and the newest request PgBouncer stamped on
        its server connections (to the second; the newest seen in this run); those
        connections, for the server to leave out of its sessions and to time their
        requests to the microsecond (:mod:`credflip.engines.postgres.pooled`); why
        this sample is no quiet: a connection of the last sample that PgBouncer closed
        since (``server_lifetime`` is enforced as a client lets go of one) took its last
        request with it, which may have been a client's that came and went meanwhile;
        and what the drain keeps of each connection for its next run."""
        seen = self.view(user)
        newest = self._newest.get(user, "")
        if seen.newest is not None:
            newest = max(newest, seen.newest.isoformat())
        self._newest[user] = newest
        counters: dict[str, Hashable] = {SIGNAL: newest}
        before, now = self._servers.get(user, frozenset()), frozenset(seen.backends)
        self._servers[user] = now
        unknown: tuple[str, ...] = ()
        if closed := len(before - now):
            unknown = (
                f"{closed} server connection(s) of {user!r} on {self.label} closed since the "
                f"last sample: what they ran before cannot be told",
            )
        return Observed(Observation(seen.clients, counters), seen.backends, unknown, seen.servers)

    def forget(self, user: str) -> None:
        """Forget *user*'s server connections seen so far: the drain ended them itself
        (``terminate``), so that their closing is no unknown at the next sample."""
        self._servers.pop(user, None)

    def close(self) -> None:
        self.console.close()
