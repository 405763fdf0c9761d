"""Aurora: every instance of a cluster, from the cluster itself or from the RDS API.

A session of the old user may sit on any reader of an Aurora cluster, and the
reader endpoint (``cluster-ro-``) reaches one of them at random. The drain
therefore watches each instance on its own endpoint. Aurora names them after
the cluster's DNS label: the cluster endpoint
``app.cluster-abc123.eu-west-1.rds.amazonaws.com`` has instances at
``<instance-id>.abc123.eu-west-1.rds.amazonaws.com``.

The instance identifiers come from the cluster itself
(``aurora_replica_status()``, ``information_schema.replica_host_status``),
which works from inside the VPC with nothing but the admin's login, or from
the RDS API (``DescribeDBClusters``), which needs IAM rights and a route to
the API. When no URL names an RDS endpoint (a CNAME of one's own in front of
the cluster), the identifiers still come from the cluster, and their endpoints
from the RDS API (``DescribeDBInstances``, in ``AWS_REGION``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .aws_clients import make_client
from .errors import ConfigurationError
from .replicas import KnownReplica

__all__ = ["AuroraHost", "describe_cluster", "describe_instances", "locate_members", "parse_host"]

_HOST = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<kind>cluster-(?:ro-|custom-)?)?(?P<dns>[a-z0-9]+)\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)\.rds\.amazonaws\.com(?P<cn>\.cn)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AuroraHost:
    """An RDS endpoint name taken apart."""

    #: The cluster identifier (cluster endpoints) or instance identifier.
    name: str
    #: True for a cluster, reader or custom endpoint; False for an instance's.
    cluster: bool
    dns: str
    region: str
    china: bool = False

    def instance(self, instance_id: str) -> str:
        """The endpoint of instance *instance_id* in the same cluster."""
        suffix = ".rds.amazonaws.com" + (".cn" if self.china else "")
        return f"{instance_id}.{self.dns}.{self.region}{suffix}".lower()


def parse_host(host: str) -> AuroraHost | None:
    """Take an RDS endpoint apart; None for any other host name."""
    match = _HOST.fullmatch(host.strip().rstrip("."))
    if match is None:
        return None
    return AuroraHost(
        name=match["name"].lower(),
        cluster=match["kind"] is not None,
        dns=match["dns"].lower(),
        region=match["region"].lower(),
        china=match["cn"] is not None,
    )


def describe_cluster(cluster_id: str, region: str, *, client: Any = None) -> list[tuple[str, int]]:
    """``(address, port)`` of every instance of cluster *cluster_id*, from the RDS API.

    botocore is imported only here; *client* lets tests and callers inject one
    (the endpoint can also be set with ``AWS_ENDPOINT_URL_RDS``).
    """
    import botocore.exceptions

    try:
        rds = client if client is not None else make_client("rds", region)
        clusters = rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"]
        members: Sequence[dict[str, Any]] = (
            clusters[0].get("DBClusterMembers", []) if clusters else []
        )
        out: list[tuple[str, int]] = []
        for member in members:
            found = rds.describe_db_instances(DBInstanceIdentifier=member["DBInstanceIdentifier"])
            for instance in found["DBInstances"]:
                endpoint = instance.get("Endpoint") or {}
                if endpoint.get("Address"):
                    out.append((str(endpoint["Address"]), int(endpoint.get("Port") or 0)))
        return sorted(out)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise ConfigurationError(
            f"cannot list the instances of Aurora cluster {cluster_id!r} with the RDS API "
            f"({type(exc).__name__}); allow rds:DescribeDBClusters and rds:DescribeDBInstances, "
            f"or pass each instance with --instance"
        ) from exc


def describe_instances(
    instance_ids: Sequence[str], region: str, *, client: Any = None
) -> dict[str, tuple[str, int] | str]:
    """Each of *instance_ids* → its ``(address, port)`` from ``DescribeDBInstances``, or
    why the API shows none for it (not found, no endpoint yet).

    Raises :class:`ConfigurationError` saying briefly why the API did not
    answer at all; the calls are bounded (5 s to connect, 10 s to read, 2 attempts).
    """
    import botocore.exceptions

    try:
        rds = client if client is not None else make_client("rds", region, attempts=2)
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigurationError(f"cannot make an RDS client ({type(exc).__name__})") from exc
    out: dict[str, tuple[str, int] | str] = {}
    for instance_id in instance_ids:
        try:
            found = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if code != "DBInstanceNotFound":
                raise ConfigurationError(f"rds:DescribeDBInstances answered {code}") from exc
            found = []
        except botocore.exceptions.BotoCoreError as exc:
            raise ConfigurationError(f"the RDS API did not answer ({type(exc).__name__})") from exc
        endpoint = (found[0].get("Endpoint") or {}) if found else {}
        if endpoint.get("Address"):
            out[instance_id] = (str(endpoint["Address"]).lower(), int(endpoint.get("Port") or 0))
        else:
            out[instance_id] = (
                "the RDS API shows no endpoint for it yet"
                if found
                else "the RDS API does not know it"
            )
    return out


def locate_members(
    members: Sequence[str], of: tuple[str, int | None], notice: Callable[[str], None]
) -> tuple[list[tuple[str, int]], list[KnownReplica]]:
    """Aurora behind a name that is not an RDS endpoint (*of*, a CNAME of one's own).

    Returns the endpoints the RDS API (region ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``) gives for the members, and each member it gives
    none for as a :class:`KnownReplica` nobody watches, with why.
    """
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        if not region:
            raise ConfigurationError("no AWS_REGION set to ask the RDS API for its endpoint")
        described = describe_instances(members, region)
    except ConfigurationError as exc:
        described = dict.fromkeys(members, str(exc))
    found = [v for v in described.values() if isinstance(v, tuple)]
    if found:
        notice(
            f"{of[0]} is Aurora behind a name that is not an RDS endpoint: watching "
            f"{len(found)} of its instances at the endpoints the RDS API gives"
        )
    unlocated = [
        KnownReplica(m, None, of, "Aurora instance", why=why)
        for m, why in described.items()
        if isinstance(why, str)
    ]
    return found, unlocated
