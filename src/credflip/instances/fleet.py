"""The env's fleet: how its instances are found, and what they can show the drain."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import cast

from ..engines import Engine, Signal
from ..errors import ConfigurationError, CredflipError, DatabaseUnavailable
from ..poolers import PgBouncer
from ..replicas import KnownReplica, ReplicaCheck, match
from ..urls import DbUrl
from .addresses import Instance, gather, parse_address
from .connections import Connections
from .discovery import drop_routes, new_members, with_aurora


class Fleet(Connections):
    """The instances of one env, with one admin connection each (opened on first use).

    Built by :meth:`of` (which finds the Aurora members); adds what the
    instances' signals and replicas tell about the drain's blind spots.
    """

    def __init__(
        self,
        primary: Engine,
        instances: Sequence[Instance],
        *,
        unlocated: Sequence[KnownReplica] = (),
        pooler: PgBouncer | None = None,
    ) -> None:
        super().__init__(primary, instances, pooler)
        #: Aurora members whose endpoints could not be found: never watched.
        self.unlocated = list(unlocated)
        #: The instances that did not answer when asked for their signals, and why.
        self._unanswered: dict[str, CredflipError] = {}

    @classmethod
    def of(
        cls,
        primary: Engine,
        *,
        urls: Iterable[tuple[str, DbUrl]] = (),
        stored: Iterable[str] = (),
        strict: bool = True,
        notice: Callable[[str], None] = lambda _m: None,
        pooler: PgBouncer | None = None,
    ) -> Fleet:
        """The admin's instance, the URLs' hosts, *stored* ones and, on Aurora, every member.

        When the Aurora members cannot be listed, *strict* raises (a drain
        must not run blind to readers); otherwise a notice says so. A URL that
        goes through *pooler* names the pooler, not an instance.
        """
        instances = gather(primary.admin_url, _past(pooler, primary, urls), stored)
        unlocated: list[KnownReplica] = []
        try:
            instances = with_aurora(primary, instances, notice, unlocated)
        except CredflipError as exc:
            if strict:
                raise
            notice(str(exc))
        fleet = cls(primary, instances, unlocated=unlocated, pooler=pooler)
        for inst in drop_routes(fleet, unlocated, notice):
            fleet.forget(inst)
        return fleet

    def new_members(self) -> list[KnownReplica]:
        """Aurora members that joined after the fleet was found (autoscaling, a new
        reader): the drain never watched them. [] when not on Aurora."""
        return new_members(self.primary, self.instances, self.unlocated)

    def signals(self) -> list[tuple[Instance, list[Signal] | CredflipError]]:
        """Each instance's signals, or the error that kept it from answering.

        Each engine finds its signals once per admin connection (a restart ends
        it, and may turn a counter off); an instance that did not answer is not
        waited for again in this command.
        """
        out: list[tuple[Instance, list[Signal] | CredflipError]] = []
        for inst in self.instances:
            if inst.address not in self._unanswered:
                ((_inst, res),) = self._each(lambda e: e.signals(), [inst])
                if not isinstance(res, CredflipError):
                    out.append((inst, cast("list[Signal]", res)))
                    continue
                self._unanswered[inst.address] = res
            out.append((inst, self._unanswered[inst.address]))
        return out

    def can_count(self, user: str, group: str | None) -> bool:
        """Whether some instance counts logins and the counts can tell *user* apart."""
        return self.primary.count_problem(user, group) is None and any(
            not isinstance(sigs, CredflipError) and any(s.cumulative and s.available for s in sigs)
            for _inst, sigs in self.signals()
        )

    def counter_gaps(
        self, user: str, group: str | None, *, unreachable: bool = True, statements: bool = False
    ) -> list[str]:
        """Why the drain could miss a short login of *user*: one phrase per gap, [] when none.

        A gap is an instance with no cumulative signal available, or (for the
        whole env) a setup in which the counters cannot tell *user* from the
        other color. An instance that does not answer is one too, unless
        *unreachable* is False (the drain counts it as in use anyway). With
        *statements* (behind RDS Proxy, where a client reuses connections the
        proxy keeps open) only a signal that counts statements closes a gap.
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
            gap = _gap(inst.address, sigs, statements=statements)
            if gap:
                gaps.append(gap)
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

    def replica_check(self, ok: Iterable[str] = (), *, retry: bool = False) -> ReplicaCheck:
        """The replicas the instances stream to, matched against the watched ones.

        *ok* are the hosts (``HOST[:PORT]``) of ``--unwatched-ok``. A server
        whose replicas cannot be listed is a problem: it may have unwatched ones.
        With *retry*, a server that is away (a restart) raises instead, so that
        the phase is tried again once it is back.
        """
        found = list(self.unlocated)
        problems: list[str] = []
        try:
            found += self.new_members()
        except CredflipError as exc:
            if retry and isinstance(exc, DatabaseUnavailable):
                raise
            problems.append(f"cannot list the Aurora members of {self.instances[0].address}: {exc}")
        found += _replicas(self, problems, retry=retry)
        accepted = [parse_address(text, what="--unwatched-ok") for text in ok]
        watched = [(i.host, i.port) for i in self.instances]
        return match(found, watched, accepted, problems=problems)

    def unwatched(self, ok: Iterable[str] = (), *, retry: bool = False) -> list[str]:
        """One phrase per replica that may serve the old user unseen, naming the
        ``--instance`` to add (or ``--unwatched-ok`` to accept it); [] when none."""
        return self.replica_check(ok, retry=retry).blocking()


def _past(
    pooler: PgBouncer | None, primary: Engine, urls: Iterable[tuple[str, DbUrl]]
) -> Iterable[tuple[str, DbUrl]]:
    """*urls* but those through *pooler* (they name the pooler, not an instance); refuse
    an admin URL through it."""
    if pooler is None:
        return urls
    if pooler.serves(primary.admin_url):
        raise ConfigurationError(
            f"the admin URL goes through PgBouncer ({pooler.address}): give the "
            f"admin URL of the server itself, which the drain and retire work on"
        )
    return [(label, url) for label, url in urls if not pooler.serves(url)]


def _replicas(fleet: Fleet, problems: list[str], *, retry: bool) -> list[KnownReplica]:
    """The replicas each instance of *fleet* lists; one that cannot adds to *problems*
    (with *retry*, one that is away raises)."""
    kind = "standby" if fleet.primary.name == "postgresql" else "replica"
    found: list[KnownReplica] = []
    for inst, res in fleet._each(lambda e: e.known_replicas()):
        if retry and isinstance(res, DatabaseUnavailable):
            raise res
        if isinstance(res, CredflipError):
            problems.append(f"cannot list the replicas of {inst.address}: {res}")
            continue
        pairs = cast("list[tuple[str, int | None]]", res)
        found += [KnownReplica(h, p, (inst.host, inst.port), kind) for h, p in pairs]
    return found


def _gap(address: str, sigs: list[Signal], *, statements: bool) -> str | None:
    """Why *address* (its signals *sigs*) could miss a short login, or None. With
    *statements* only a signal that counts statements counts."""
    cumulative = [s for s in sigs if s.cumulative and (s.statements or not statements)]
    if any(s.available for s in cumulative):
        return None
    how = "; or ".join(s.detail for s in cumulative if not s.available)
    what = "statements per user" if statements else "logins"
    none = (
        "no per-user statement count the admin can read; see 'Behind a pooler' in the README"
        if statements
        else "this server keeps no per-user count"
    )
    return f"{address} counts no {what} ({how or none})"
