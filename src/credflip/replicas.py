"""Replicas the servers know of, matched against the instances the drain watches.

A primary knows the replicas that stream from it (PostgreSQL
``pg_stat_replication``; MySQL and MariaDB ``SHOW REPLICAS``/``SHOW SLAVE
HOSTS`` and their binlog dump threads); a standby knows its cascaded ones. A
replica that nobody watches may serve clients of the old user that the drain
never sees, so such a replica blocks the retire unless the operator accepts it
(``--unwatched-ok HOST``).

Matching is by address, not by name: host names resolve (``getaddrinfo``),
every loopback address counts as the same host, and ports are compared when
both sides know theirs (PostgreSQL never says on which port a standby
listens). Each watched instance stands for at most one replica of each
reporting server, so two standbys on one host need two ``--instance``; the
reporting server itself never stands for one of its replicas.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["KnownReplica", "ReplicaCheck", "addresses", "match"]

#: ``(host, port)``; the port is None where it is not known.
Address = tuple[str, int | None]
Resolve = Callable[[str], frozenset[str]]


def _shown(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def addresses(host: str) -> frozenset[str]:
    """The IP addresses *host* stands for, ``loopback`` for any loopback one.

    A name that does not resolve stands for itself (lowercased), so that it
    still matches the same name written elsewhere.
    """
    text = host.strip().strip("[]").rstrip(".").lower()
    try:
        found = {
            str(info[4][0]) for info in socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
        }
    except (OSError, UnicodeError):
        found = set()
    return frozenset(_canonical(ip) for ip in found) or frozenset({text})


def _canonical(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip.lower()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return "loopback" if addr.is_loopback else str(addr)


@dataclass(frozen=True)
class KnownReplica:
    """A replica some watched server reports (or an Aurora member nobody could locate)."""

    host: str
    port: int | None
    #: The watched server that reports it.
    of: Address
    #: ``standby`` (PostgreSQL), ``replica`` (MySQL) or ``Aurora instance``.
    kind: str = "replica"
    #: Why it could not be located (Aurora members only).
    why: str = ""

    @property
    def address(self) -> str:
        """``host:port``, the port only when known."""
        return _shown(self.host, self.port)

    def advice(self) -> str:
        """One phrase: which replica, and the two ways to go on."""
        of = _shown(*self.of)
        if self.why:
            return (
                f"{self.kind} {self.host} of the cluster at {of} ({self.why}): add --instance "
                f"with its endpoint, or --unwatched-ok {self.host}"
            )
        if self.port is None:
            return (
                f"{self.kind} {self.host} of {of}: add --instance {_shown(self.host, None)}:PORT "
                f"(the port it serves on), or --unwatched-ok {self.host}"
            )
        return (
            f"{self.kind} {self.address} of {of}: add --instance {self.address}, or "
            f"--unwatched-ok {self.host}"
        )

    def accepted(self) -> str:
        """One phrase for a replica ``--unwatched-ok`` accepts."""
        return (
            f"not watching {self.kind} {self.address} of {_shown(*self.of)} (--unwatched-ok): "
            f"clients of the old user there are not seen"
        )


@dataclass(frozen=True)
class ReplicaCheck:
    """Which known replicas no instance watches, which of them are accepted, what failed."""

    unwatched: tuple[KnownReplica, ...] = ()
    accepted: tuple[KnownReplica, ...] = ()
    #: Servers whose replicas could not be listed, each with why.
    problems: tuple[str, ...] = ()

    def blocking(self) -> list[str]:
        """One phrase per reason the drain is blind somewhere; [] when it sees everything."""
        return [r.advice() for r in self.unwatched] + list(self.problems)

    def notes(self) -> list[str]:
        """One phrase per accepted unwatched replica."""
        return [r.accepted() for r in self.accepted]


def match(
    found: Sequence[KnownReplica],
    watched: Sequence[Address],
    ok: Sequence[Address] = (),
    *,
    problems: Iterable[str] = (),
    resolve: Resolve = addresses,
) -> ReplicaCheck:
    """Match *found* against the *watched* instances; accept the rest when *ok* names them.

    Aurora members that could not be located (``why`` set) are never watched
    and are accepted by their identifier only.
    """
    hosts = _Hosts(resolve)
    # Each watched server is one replica of one upstream: it stands for at most
    # one report, never for its own replica, and the primary (the admin URL's,
    # first) for none. A standby reported without a port (PostgreSQL) is then
    # not "found" on a co-located server that is someone else.
    free = list(watched[1:])
    unwatched: list[KnownReplica] = []
    accepted: list[KnownReplica] = []
    matched: list[KnownReplica] = []
    # Replicas with a known port first: an exact match is not taken by a portless one.
    for rep in sorted(found, key=lambda r: r.port is None):
        if not rep.why:
            if _again(rep, matched, hosts):
                continue
            hit = _watcher(rep, free, hosts)
            if hit is not None:
                free.remove(hit)
                matched.append(rep)
                continue
        if any(
            _ports_agree(port, rep.port)
            and (host.lower() == rep.host.lower() or (not rep.why and hosts.same(host, rep.host)))
            for host, port in ok
        ):
            accepted.append(rep)
        else:
            unwatched.append(rep)
    order = {id(r): n for n, r in enumerate(found)}
    return ReplicaCheck(
        tuple(_unique(sorted(unwatched, key=lambda r: order[id(r)]))),
        tuple(_unique(sorted(accepted, key=lambda r: order[id(r)]))),
        tuple(problems),
    )


class _Hosts:
    """Host names compared by name or by a shared address (each name resolved once)."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._cache: dict[str, frozenset[str]] = {}

    def ips(self, host: str) -> frozenset[str]:
        key = host.lower()
        if key not in self._cache:
            self._cache[key] = self._resolve(key)
        return self._cache[key]

    def same(self, a: str, b: str) -> bool:
        return a.lower() == b.lower() or bool(self.ips(a) & self.ips(b))


def _ports_agree(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def _again(rep: KnownReplica, matched: Iterable[KnownReplica], hosts: _Hosts) -> bool:
    """The same report by the same upstream, watched under a second name."""
    return any(
        m.of != rep.of
        and m.port == rep.port
        and hosts.same(m.host, rep.host)
        and m.of[1] == rep.of[1]
        and hosts.same(m.of[0], rep.of[0])
        for m in matched
    )


def _watcher(rep: KnownReplica, free: Iterable[Address], hosts: _Hosts) -> Address | None:
    """The first *free* watched server that is *rep* (and not its own upstream), if any."""
    return next(
        (
            w
            for w in free
            if not (hosts.same(w[0], rep.of[0]) and w[1] == rep.of[1])
            and hosts.same(w[0], rep.host)
            and _ports_agree(w[1], rep.port)
        ),
        None,
    )


def _unique(replicas: Iterable[KnownReplica]) -> list[KnownReplica]:
    """Drop a replica that an earlier server reported too (one server seen by two names)."""
    first: dict[tuple[str, int | None], Address] = {}
    return [r for r in replicas if first.setdefault((r.host.lower(), r.port), r.of) == r.of]
