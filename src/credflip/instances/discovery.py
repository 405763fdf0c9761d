"""Finding an env's instances on Aurora: every member of the cluster, each on its own endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .. import aurora
from ..engines import Engine
from ..errors import CredflipError, EngineError
from ..replicas import KnownReplica
from .addresses import Instance
from .connections import Connections

#: The source of an instance found as an Aurora member.
AURORA = "Aurora"


def with_aurora(
    primary: Engine,
    instances: list[Instance],
    notice: Callable[[str], None],
    unlocated: list[KnownReplica],
) -> list[Instance]:
    """*instances* with every Aurora member on its own endpoint instead of the cluster's.

    Members found but not located go to *unlocated*; an env not on Aurora
    keeps its instances.
    """
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
        member = Instance(host, port or instances[0].port, AURORA)
        if all(member.address != i.address for i in kept):
            kept.append(member)
    return kept


def aurora_watched(instances: Sequence[Instance], unlocated: Sequence[KnownReplica]) -> set[str]:
    """The Aurora members watched at their own endpoints, or accepted as unlocated."""
    return {i.host.split(".")[0].lower() for i in instances if i.source == AURORA} | {
        r.host.lower() for r in unlocated
    }


def drop_routes(
    fleet: Connections, unlocated: Sequence[KnownReplica], notice: Callable[[str], None]
) -> list[Instance]:
    """The instances that are only a name of one's own (a CNAME) for an Aurora member
    already watched at its own endpoint.

    The reader CNAME reaches one member at random: watched as an instance, it
    would look like a different server at each connection. One that leads
    elsewhere, or cannot tell, stays.
    """
    members = aurora_watched(fleet.instances, unlocated)
    routes: list[Instance] = []
    if not members:
        return routes
    for inst in fleet.instances[1:]:
        if inst.source == AURORA or aurora.parse_host(inst.host) is not None:
            continue
        try:
            reached = fleet.engine(inst).aurora_instance()
        except CredflipError:
            continue  # the drain reads it as it is, unreachable or not
        if reached is not None and reached.lower() in members:
            routes.append(inst)
            notice(
                f"{inst.address} ({inst.source}) leads to Aurora instance {reached}: watched "
                f"through each member's own endpoint instead"
            )
    return routes


def new_members(
    primary: Engine, instances: Sequence[Instance], unlocated: Sequence[KnownReplica]
) -> list[KnownReplica]:
    """Aurora members that are neither watched nor accepted: joined since the fleet was found."""
    watched = aurora_watched(instances, unlocated)
    if not watched:
        return []
    of = (instances[0].host, instances[0].port)
    return [
        KnownReplica(m, None, of, "Aurora instance", why="it joined after the drain began")
        for m in primary.cluster_members() or []
        if m.lower() not in watched
    ]
