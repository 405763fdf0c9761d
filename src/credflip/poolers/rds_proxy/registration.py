"""The proxy as ``DescribeDBProxies`` shows it, and whether it can log in as both colors.

RDS Proxy logs in as a database user only with a secret in its ``Auth``
list. ``ModifyDBProxy --auth`` *replaces* that list, so the command credflip
prints to register the env's secrets repeats every entry the proxy has, then
adds the missing ones: run as printed, it takes nothing away.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError
from ...layout import Color
from .aws import translate

__all__ = ["ProxyInfo", "describe_proxy", "modify_command", "unregistered"]

#: The keys of an ``Auth`` entry that ``ModifyDBProxy`` takes back (``UserAuthConfig``).
_AUTH_KEYS = ("Description", "UserName", "AuthScheme", "SecretArn", "IAMAuth")
_CLIENT_AUTH = "ClientPasswordAuthType"
#: A secret's ARN ends with a hyphen and six random characters after its name.
_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class ProxyInfo:
    """What ``DescribeDBProxies`` says of one proxy."""

    name: str
    region: str
    #: ``POSTGRESQL``, ``MYSQL`` or ``SQLSERVER``.
    engine_family: str
    endpoint: str
    auth: tuple[Mapping[str, Any], ...]
    idle_client_timeout: int | None = None
    status: str = ""

    def has_secret(self, arn: str) -> bool:
        """Whether the secret *arn* (its full ARN, as ``DescribeSecret`` gives it now) is in
        the ``Auth`` list: by that ARN, or by its partial ARN (without the random suffix),
        which names whichever secret has the name. A full ARN with another suffix is a
        secret deleted since and created again under the same name: not this one."""
        bare = _SUFFIX.sub("", arn)
        return any(str(entry.get("SecretArn") or "") in (arn, bare) for entry in self.auth)


def describe_proxy(client: Any, name: str, region: str) -> ProxyInfo:
    """``DescribeDBProxies`` of *name*; raise :class:`ConfigurationError` when it does not exist."""
    try:
        found = client.describe_db_proxies(DBProxyName=name)["DBProxies"]
    except Exception as exc:
        raise translate(exc, "rds:DescribeDBProxies", name) from exc
    if not found:
        raise ConfigurationError(f"no RDS Proxy named {name!r} in region {region}")
    proxy = found[0]
    return ProxyInfo(
        name=str(proxy["DBProxyName"]),
        region=region,
        engine_family=str(proxy.get("EngineFamily") or ""),
        endpoint=str(proxy.get("Endpoint") or ""),
        auth=tuple(dict(a) for a in proxy.get("Auth") or ()),
        idle_client_timeout=proxy.get("IdleClientTimeout"),
        status=str(proxy.get("Status") or ""),
    )


def unregistered(info: ProxyInfo, arns: Mapping[Color, str]) -> list[Color]:
    """The colors whose secret the proxy does not list."""
    return [color for color, arn in arns.items() if not info.has_secret(arn)]


def modify_command(
    info: ProxyInfo, arns: Mapping[Color, str], missing: Sequence[Color], env: str
) -> str:
    """The ``aws rds modify-db-proxy`` that adds *missing* colors' secrets and keeps the rest,
    but for entries of a secret of the same name deleted since (another random suffix)."""
    replaced = {_SUFFIX.sub("", arns[color]) for color in missing}
    entries: list[dict[str, Any]] = []
    for entry in info.auth:
        if _SUFFIX.sub("", str(entry.get("SecretArn") or "")) in replaced:
            continue
        kept = {k: entry[k] for k in (*_AUTH_KEYS, _CLIENT_AUTH) if entry.get(k)}
        entries.append(kept)
    # New entries authenticate clients the way the proxy's other secrets do.
    client_auth = next((e[_CLIENT_AUTH] for e in info.auth if e.get(_CLIENT_AUTH)), None)
    for color in missing:
        entry = {
            "Description": f"credflip {color.value} user of env {env}",
            "AuthScheme": "SECRETS",
            "SecretArn": arns[color],
            "IAMAuth": "DISABLED",
        }
        if client_auth:
            entry[_CLIENT_AUTH] = client_auth
        entries.append(entry)
    auth = json.dumps(entries, separators=(",", ":"))
    return (
        f"aws rds modify-db-proxy --region {shlex.quote(info.region)} --db-proxy-name "
        f"{shlex.quote(info.name)} --auth {shlex.quote(auth)}"
    )
