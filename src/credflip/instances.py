"""Every instance of an env's database, each read through the admin's login.

Sessions and counters are per instance: a session of the old user on a read
replica is invisible from the primary. The drain, ``status``, ``verify`` and
``--terminate`` therefore work on a :class:`Fleet`: the admin URL's host (the
primary, always first), the hosts of both colors' URLs, the instances the
operator named (``--instance``, kept in the env's state), and on Aurora every
instance of the cluster. Each is reached with the admin URL's user, password,
database and options, on its own host and port. A replica that one of them
streams to but none of them is (:mod:`.replicas`) makes the drain blind there:
:meth:`Fleet.unwatched` names it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from . import aurora
from .drain import Reading
from .engines import Engine, Sessions, Signal, engine_class
from .errors import ConfigurationError, CredflipError, EngineError, RotationError, UsageError
from .replicas import KnownReplica, ReplicaCheck, match
from .urls import DbUrl

__all__ = ["Fleet", "Instance", "format_address", "normalize", "parse_address"]

_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d+))?"
)


def parse_address(text: str, *, what: str = "--instance") -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port`` → ``(host, port)``; raise UsageError otherwise."""
    match = _ADDRESS.fullmatch(text.strip()) if isinstance(text, str) else None
    port = int(match["port"]) if match and match["port"] else None
    if match is None or (port is not None and not 0 < port < 65536):
        raise UsageError(f"invalid {what} {text!r}: use HOST or HOST:PORT, e.g. db-2.internal:5432")
    return (match["v6"] or match["host"]).lower(), port


def format_address(host: str, port: int | None) -> str:
    """The inverse of :func:`parse_address`."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@dataclass(frozen=True)
class Instance:
    """One server the drain watches."""

    host: str
    port: int | None
    #: Where it came from: ``admin URL``, ``writer URL``, ``reader URL``,
    #: ``--instance`` or ``Aurora``.
    source: str

    @property
    def address(self) -> str:
        """``host:port`` (the port only when known)."""
        return format_address(self.host, self.port)

    def on(self, url: DbUrl) -> DbUrl:
        """*url* pointed at this instance (same user, password, database and options)."""
        return dataclasses.replace(url, host=self.host, port=self.port)


def normalize(
    stored: Iterable[str], add: Iterable[str] = (), forget: Iterable[str] = ()
) -> list[str]:
    """*stored* plus *add* minus *forget*, each as ``host:port``, in order, without repeats."""
    gone = {format_address(*parse_address(t)) for t in forget}
    out: list[str] = []
    for text in (*stored, *add):
        address = format_address(*parse_address(text))
        if address not in gone and address not in out:
            out.append(address)
    return out


def gather(
    admin_url: DbUrl, urls: Iterable[tuple[str, DbUrl]], stored: Iterable[str]
) -> list[Instance]:
    """The admin's host first, then the labelled URLs' hosts and the stored ones, deduplicated."""
    default = _default_port(admin_url)
    out: list[Instance] = []
    seen: set[str] = set()

    def add(host: str, port: int | None, source: str) -> None:
        inst = Instance(host.lower(), port or default, source)
        if inst.address not in seen:
            seen.add(inst.address)
            out.append(inst)

    add(admin_url.host, admin_url.port, "admin URL")
    for label, url in urls:
        add(url.host, url.port, label)
    for text in stored:
        add(*parse_address(text), "--instance")
    return out


def _default_port(url: DbUrl) -> int:
    return 5432 if url.backend in ("postgresql", "postgres", "psql") else 3306


class Fleet:
    """The instances of one env, with one admin connection each (opened on first use)."""

    def __init__(
        self,
        primary: Engine,
        instances: Sequence[Instance],
        *,
        unlocated: Sequence[KnownReplica] = (),
    ) -> None:
        if not instances:
            raise ConfigurationError("an env has at least the admin URL's instance")
        self.primary = primary
        self.instances = list(instances)
        #: Aurora members whose endpoints could not be found: never watched.
        self.unlocated = list(unlocated)
        self._engines: dict[str, Engine] = {self.instances[0].address: primary}
        self._signals: list[tuple[Instance, list[Signal] | CredflipError]] | None = None

    @classmethod
    def of(
        cls,
        primary: Engine,
        *,
        urls: Iterable[tuple[str, DbUrl]] = (),
        stored: Iterable[str] = (),
        strict: bool = True,
        notice: Callable[[str], None] = lambda _m: None,
    ) -> Fleet:
        """The admin's instance, the URLs' hosts, *stored* ones and, on Aurora, every member.

        When the Aurora members cannot be listed, *strict* raises (a drain
        must not run blind to readers); otherwise a notice says so.
        """
        instances = gather(primary.admin_url, urls, stored)
        unlocated: list[KnownReplica] = []
        try:
            instances = cls._with_aurora(primary, instances, notice, unlocated)
        except CredflipError as exc:
            if strict:
                raise
            notice(str(exc))
        return cls(primary, instances, unlocated=unlocated)

    @staticmethod
    def _with_aurora(
        primary: Engine,
        instances: list[Instance],
        notice: Callable[[str], None],
        unlocated: list[KnownReplica],
    ) -> list[Instance]:
        hosts = [(inst, aurora.parse_host(inst.host)) for inst in instances]
        named = next((h for _, h in hosts if h is not None), None)
        try:
            members = primary.cluster_members()
        except EngineError as exc:
            if named is None or not named.cluster:
                raise
            notice(f"cannot read the Aurora topology from the cluster ({exc}); asking the RDS API")
            members = None
        found: list[tuple[str, int | None]] = []
        if members is not None and named is not None:
            found = [(named.instance(m), instances[0].port) for m in members]
        elif named is not None and named.cluster:
            found = [(h, p) for h, p in aurora.describe_cluster(named.name, named.region)]
        elif members:
            first = instances[0]
            located, blind = aurora.locate_members(members, (first.host, first.port), notice)
            found = list(located)
            unlocated.extend(blind)
        if not found:
            return instances
        # The reader and custom endpoints reach one member at random: watch
        # each member on its own endpoint instead.
        kept = [
            inst for inst, host in hosts if inst is instances[0] or host is None or not host.cluster
        ]
        for host, port in found:
            member = Instance(host, port or instances[0].port, "Aurora")
            if all(member.address != i.address for i in kept):
                kept.append(member)
        return kept

    def engine(self, instance: Instance) -> Engine:
        """The admin's engine on *instance* (the primary's own for the first)."""
        eng = self._engines.get(instance.address)
        if eng is None:
            url = instance.on(self.primary.admin_url)
            eng = engine_class(url.scheme)(
                url,
                connect_timeout=self.primary.connect_timeout,
                statement_timeout=self.primary.statement_timeout,
            )
            self._engines[instance.address] = eng
        return eng

    @property
    def replicas(self) -> list[Instance]:
        """Every instance but the primary."""
        return self.instances[1:]

    def describe(self) -> str:
        """``127.0.0.1:5432 (admin URL), 10.0.0.7:5432 (reader URL)``."""
        return ", ".join(f"{i.address} ({i.source})" for i in self.instances)

    def _each(self, func: Callable[[Engine], object]) -> list[tuple[Instance, object]]:
        out: list[tuple[Instance, object]] = []
        for inst in self.instances:
            eng = self.engine(inst)
            try:
                out.append((inst, func(eng)))
            except CredflipError as exc:
                # Reconnect at the next call rather than reuse a broken link.
                eng.close()
                out.append((inst, exc))
        return out

    def signals(self) -> list[tuple[Instance, list[Signal] | CredflipError]]:
        """Each instance's signals, or the error that kept it from answering.

        Read once per fleet: signals do not change during a command, and an
        instance that does not answer is not waited for again.
        """
        if self._signals is None:
            self._signals = [(i, r) for i, r in self._each(lambda e: e.signals())]  # type: ignore[misc]
        return list(self._signals)

    def can_count(self, user: str, group: str | None) -> bool:
        """Whether some instance counts logins and the counts can tell *user* apart."""
        return self.primary.count_problem(user, group) is None and any(
            not isinstance(sigs, CredflipError) and any(s.cumulative and s.available for s in sigs)
            for _inst, sigs in self.signals()
        )

    def sessions(self, user: str) -> list[tuple[Instance, Sessions | CredflipError]]:
        """*user*'s open sessions on each instance, or the error."""
        return [(inst, res) for inst, res in self._each(lambda e: e.sessions(user))]  # type: ignore[misc]

    def read(self, user: str, *, counting: bool, position: str | None) -> list[Reading]:
        """One drain sample of *user* on every instance.

        *counting* says whether the counters attribute *user*'s logins to it
        at all; *position* is the primary's write position once they do: a
        standby's counters are trusted only after it replayed that far.
        """
        readings: list[Reading] = []
        for inst in self.instances:
            eng = self.engine(inst)
            try:
                obs = eng.observe(user)
                pending = None
                if counting and position is not None and inst is not self.instances[0]:
                    gap = eng.replay_gap(position)
                    if gap:
                        pending = (
                            f"standby has not yet replayed the start of the drain ({gap} bytes "
                            f"behind), so its counters cannot see {user!r} yet"
                        )
                counters = obs.counters if counting else {}
                readings.append(
                    Reading(
                        inst.address,
                        obs.sessions,
                        counters,
                        pending,
                        statements=obs.statements,
                        started=obs.started,
                    )
                )
            except CredflipError as exc:
                eng.close()
                readings.append(Reading(inst.address, error=str(exc)))
        return readings

    def wait_replayed(
        self,
        position: str | None,
        *,
        timeout: float,
        why: str,
        notice: Callable[[str], None],
        interval: float = 0.1,
    ) -> None:
        """Wait until every standby has replayed *position*, at most *timeout* seconds.

        Standbys that cannot report a position (MySQL, Aurora) are not waited
        for here; their callers retry instead. Raises :class:`RotationError`
        naming the standby that is still behind or cannot be reached.
        """
        if position is None:
            return
        deadline = time.monotonic() + timeout
        for inst in self.replicas:
            eng = self.engine(inst)
            last_note = 0.0
            while True:
                try:
                    gap = eng.replay_gap(position)
                except CredflipError as exc:
                    eng.close()
                    raise RotationError(
                        f"cannot check that {inst.address} ({inst.source}) replayed {why}: {exc}; "
                        f"start it, or if it was removed for good, drop it with --forget-instance "
                        f"{inst.address}"
                    ) from exc
                if not gap:
                    break
                now = time.monotonic()
                if now >= deadline:
                    raise RotationError(
                        f"standby {inst.address} ({inst.source}) is still {gap} bytes behind "
                        f"after {timeout:g}s and has not replayed {why}; check its replication, "
                        f"or allow more time with --replica-lag-timeout"
                    )
                if now - last_note >= 2.0:
                    notice(
                        f"waiting for standby {inst.address} to replay {why} ({gap} bytes behind, "
                        f"{deadline - now:.0f}s left)"
                    )
                    last_note = now
                time.sleep(interval)

    def terminate(self, user: str) -> int:
        """End *user*'s sessions on every instance; raise if one cannot be reached."""
        ended = 0
        for inst, res in self._each(lambda e: e.terminate(user)):
            if isinstance(res, CredflipError):
                raise RotationError(
                    f"cannot end the sessions of {user!r} on {inst.address}: {res}"
                ) from res
            ended += int(res)  # type: ignore[call-overload]
        return ended

    def counter_gaps(self, user: str, group: str | None, *, unreachable: bool = True) -> list[str]:
        """Why the drain could miss a short login of *user*: one phrase per gap, [] when none.

        A gap is an instance with no cumulative signal available, or (for the
        whole env) a setup in which the counters cannot tell *user* from the
        other color. An instance that does not answer is one too, unless
        *unreachable* is False (the drain counts it as in use anyway).
        """
        gaps: list[str] = []
        problem = self.primary.count_problem(user, group)
        if problem:
            gaps.append(problem)
        for inst, sigs in self.signals():
            if isinstance(sigs, CredflipError):
                if unreachable:
                    gaps.append(f"{inst.address} cannot be read ({sigs})")
                continue
            cumulative = [s for s in sigs if s.cumulative]
            if not any(s.available for s in cumulative):
                how = "; or ".join(s.detail for s in cumulative)
                gaps.append(
                    f"{inst.address} counts no logins"
                    + (f" ({how})" if how else " (this server keeps no per-user count)")
                )
        return gaps

    def require_session_views(self) -> None:
        """Refuse when the admin cannot see other users' sessions on a reachable instance."""
        for inst, sigs in self.signals():
            if isinstance(sigs, CredflipError):
                continue
            for sig in sigs:
                if not sig.cumulative and not sig.available:
                    raise ConfigurationError(
                        f"the admin cannot see other users' sessions on {inst.address}, so the "
                        f"drain would be blind there: {sig.detail}"
                    )

    def replica_check(self, ok: Iterable[str] = ()) -> ReplicaCheck:
        """The replicas the instances stream to, matched against the watched ones.

        *ok* are the hosts (``HOST[:PORT]``) of ``--unwatched-ok``. A server
        whose replicas cannot be listed is a problem: it may have unwatched ones.
        """
        found = list(self.unlocated)
        problems: list[str] = []
        kind = "standby" if self.primary.name == "postgresql" else "replica"
        for inst, res in self._each(lambda e: e.known_replicas()):
            if isinstance(res, CredflipError):
                problems.append(f"cannot list the replicas of {inst.address}: {res}")
                continue
            pairs = cast("list[tuple[str, int | None]]", res)
            found += [KnownReplica(h, p, (inst.host, inst.port), kind) for h, p in pairs]
        accepted = [parse_address(text, what="--unwatched-ok") for text in ok]
        watched = [(i.host, i.port) for i in self.instances]
        return match(found, watched, accepted, problems=problems)

    def unwatched(self, ok: Iterable[str] = ()) -> list[str]:
        """One phrase per replica that may serve the old user unseen, naming the
        ``--instance`` to add (or ``--unwatched-ok`` to accept it); [] when none."""
        return self.replica_check(ok).blocking()

    def close(self) -> None:
        """Close every connection but the primary's (its owner closes it)."""
        for address, eng in self._engines.items():
            if address != self.instances[0].address:
                eng.close()
