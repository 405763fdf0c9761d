"""What an env records of its RDS Proxy, in ``{prefix}/{env}/rds-proxy`` (a String, JSON).

Pure: no boto3 here, so that the fleet (which leaves the proxy's endpoint out
of the instances it watches) and ``status`` read it without AWS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError, UsageError
from ...instances import format_address, parse_address
from ...layout import Layout
from ...stores.base import Store

__all__ = [
    "PROXY_PORTS",
    "ProxySetting",
    "endpoint_text",
    "given_endpoint",
    "is_proxy_host",
    "parse_endpoint",
    "read_setting",
    "validate_name",
]

#: RDS Proxy listens on the engine family's default port, whatever the database's.
PROXY_PORTS = {"postgresql": 5432, "mysql": 3306}

# RDS identifiers: a letter, then letters, digits and single hyphens, at most 63.
_NAME = re.compile(r"[A-Za-z](?:-?[A-Za-z0-9])*")
# name.proxy-abc123.eu-west-1.rds.amazonaws.com, and a custom endpoint's
# name.endpoint.proxy-abc123.eu-west-1.rds.amazonaws.com.
_PROXY_HOST = re.compile(
    r"(?:[a-z0-9-]+\.)+proxy-[a-z0-9]+\.[a-z]{2}(?:-[a-z]+)+-\d\.rds\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE,
)


def validate_name(name: str) -> str:
    """Return *name* if it can name a DB proxy, else raise :class:`UsageError`."""
    if not isinstance(name, str) or len(name) > 63 or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid --rds-proxy {str(name)[:70]!r}: a DB proxy name starts with a letter and "
            f"has letters, digits and single hyphens (at most 63), e.g. app-proxy"
        )
    return name


def is_proxy_host(host: str) -> bool:
    """True for an RDS Proxy endpoint's name (the default or a custom endpoint)."""
    return bool(_PROXY_HOST.fullmatch(host.strip()))


@dataclass(frozen=True)
class ProxySetting:
    """The env's RDS Proxy: its name, region, and where clients reach it."""

    name: str
    region: str
    #: ``host:port`` of the proxy's endpoint as DescribeDBProxies gave it at init, or
    #: as the operator gave it (``--rds-proxy-endpoint``: a name of one's own, a tunnel).
    endpoint: str
    #: The endpoint was given by the operator, not read from the RDS API.
    given: bool = False

    def __post_init__(self) -> None:
        validate_name(self.name)

    @property
    def address(self) -> tuple[str, int]:
        """The endpoint as ``(host, port)``."""
        host, port = parse_address(self.endpoint, what="--rds-proxy-endpoint")
        if port is None:
            raise ConfigurationError(f"the RDS Proxy endpoint {self.endpoint!r} has no port")
        return host, port

    def is_endpoint(self, host: str) -> bool:
        """Whether clients that connect to *host* go through this proxy."""
        return host.lower().rstrip(".") == self.address[0] or is_proxy_host(host)

    def to_json(self) -> str:
        """The stored value."""
        data: dict[str, Any] = {"name": self.name, "region": self.region}
        data["endpoint"] = self.endpoint
        if self.given:
            data["given"] = True
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, where: str) -> ProxySetting:
        """Parse the stored value; a damaged one says how to repair it."""
        try:
            data = json.loads(text)
            return cls(
                name=str(data["name"]),
                region=str(data["region"]),
                endpoint=str(data["endpoint"]),
                given=bool(data.get("given")),
            )
        except (ValueError, KeyError, TypeError, UsageError) as exc:
            raise ConfigurationError(
                f"{where} is not a valid RDS Proxy setting ({type(exc).__name__}); delete it and "
                f"name the proxy again with 'credflip rotate --rds-proxy NAME'"
            ) from exc


def parse_endpoint(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` of ``--rds-proxy-endpoint`` (the engine's port when none is given)."""
    host, port = parse_address(text, what="--rds-proxy-endpoint")
    return host, port or default_port


def endpoint_text(host: str, port: int) -> str:
    """``host:port`` as kept in the setting."""
    return format_address(host.lower().rstrip("."), port)


def given_endpoint(text: str, engine: str) -> str:
    """``--rds-proxy-endpoint`` *text* as kept in the setting of an env of *engine*."""
    return endpoint_text(*parse_endpoint(text, PROXY_PORTS.get(engine, 5432)))


def read_setting(
    store: Store, layout: Layout, values: dict[str, str] | None = None
) -> ProxySetting | None:
    """The env's RDS Proxy, or None; *values* is a read of the store that may hold it."""
    text = (values if values is not None else store.get_many([layout.rds_proxy])).get(
        layout.rds_proxy
    )
    return None if text is None else ProxySetting.from_json(text, where=layout.rds_proxy)
