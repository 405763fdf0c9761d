"""Finding an env's instances on Aurora: every member of the cluster, each on its own endpoint."""

from __future__ import annotations

from collections.abc import Callable

from .. import aurora
from ..engines import Engine
from ..errors import EngineError
from ..replicas import KnownReplica
from .addresses import Instance


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
        member = Instance(host, port or instances[0].port, "Aurora")
        if all(member.address != i.address for i in kept):
            kept.append(member)
    return kept
