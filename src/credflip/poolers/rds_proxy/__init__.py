"""RDS Proxy in front of an env's database.

RDS Proxy logs in to the database as a user only with a Secrets Manager
secret of that user in its ``Auth`` list. An env behind one
(``credflip init --rds-proxy NAME``, or ``rotate --rds-proxy NAME`` for an env
already managed) therefore keeps one secret per color in the proxy's format
(:mod:`.secrets`), and a rotation:

- refuses to start while the proxy does not list both secrets, printing the
  ``aws rds modify-db-proxy`` that registers them (:mod:`.registration`);
- writes the new color's secret in prepare, before verify, and verifies
  through the proxy's endpoint as well as directly;
- drains on what the database counts, not on its open sessions: the proxy
  keeps the old user's database connections pooled after its clients left.

The package: :mod:`.setting` (what the env records, pure), :mod:`.aws` (boto3),
:mod:`.secrets`, :mod:`.registration`, and :class:`RdsProxy` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigurationError
from ...layout import Color, Layout
from ...stores.base import Store
from ...urls import DbUrl
from .aws import client
from .registration import ProxyInfo, describe_proxy, modify_command, unregistered
from .secrets import ProxySecrets, secret_value
from .setting import (
    PROXY_PORTS,
    ProxySetting,
    endpoint_text,
    given_endpoint,
    read_setting,
    validate_name,
)

__all__ = ["ProxySetting", "RdsProxy", "attach", "for_env", "read_setting", "validate_name"]

#: ``EngineFamily`` of a proxy in front of each engine credflip manages.
_FAMILIES = {"postgresql": "POSTGRESQL", "mysql": "MYSQL"}


class RdsProxy:
    """One env's RDS Proxy: its secrets, its registration, its endpoint.

    *rds* and *secretsmanager* are boto3 clients (made in the setting's region
    when not given).
    """

    def __init__(
        self,
        setting: ProxySetting,
        layout: Layout,
        *,
        kms_key: str | None = None,
        rds: Any = None,
        secretsmanager: Any = None,
        info: ProxyInfo | None = None,
    ) -> None:
        self.setting = setting
        self.layout = layout
        self._rds = rds
        self._info = info
        self.secrets = ProxySecrets(
            secretsmanager if secretsmanager is not None else _Lazy("secretsmanager", setting),
            layout,
            kms_key=kms_key,
            region=setting.region,
        )

    def __repr__(self) -> str:
        return f"<RdsProxy {self.setting.name} at {self.setting.endpoint}>"

    def moved_to(self, endpoint: str) -> RdsProxy:
        """This proxy reached at *endpoint* (``host:port``, given by the operator)."""
        setting = dataclasses.replace(self.setting, endpoint=endpoint, given=True)
        return RdsProxy(setting, self.layout, kms_key=self.secrets.kms_key, rds=self._rds)

    @property
    def name(self) -> str:
        """The proxy's name."""
        return self.setting.name

    def info(self) -> ProxyInfo:
        """``DescribeDBProxies`` of the proxy (once per object)."""
        if self._info is None:
            if self._rds is None:
                self._rds = client("rds", self.setting.region)
            self._info = describe_proxy(self._rds, self.name, self.setting.region)
        return self._info

    def via(self, url: DbUrl) -> DbUrl:
        """*url* (same user, password, database and options) through the proxy's endpoint."""
        host, port = self.setting.address
        return dataclasses.replace(url, host=host, port=port)

    def write_secret(
        self, color: Color, url: DbUrl, *, engine: str, direct: DbUrl, done: str
    ) -> str:
        """Write *color*'s secret: *url*'s login on the database server (*url*'s host, or
        *direct*'s when *url* goes through the proxy); return the secret's ARN. *done*
        says what the caller changed, should the secret be scheduled for deletion."""
        target = direct if self.setting.is_endpoint(url.host) else url
        port = target.port or PROXY_PORTS.get(engine, 5432)
        value = secret_value(url, engine=engine, host=target.host, port=port)
        return self.secrets.write(color, value, done=done)

    def require_registered(self, users: Mapping[Color, str], *, done: str) -> None:
        """Raise (naming the command that fixes it) unless the proxy lists both colors'
        secrets, neither scheduled for deletion; *done* says what the caller has changed
        so far."""
        arns: dict[Color, str] = {}
        for color in Color:
            found = self.secrets.live(color, done)
            if found is None:
                raise ConfigurationError(
                    f"secret {self.secrets.name(color)} of RDS Proxy {self.name} is gone: "
                    f"delete {self.layout.rds_proxy} and run 'credflip rotate --env "
                    f"{self.layout.env} --rds-proxy {self.name}' to write both secrets again "
                    f"(then register them as it says); {done}"
                )
            arns[color] = str(found["ARN"])
        info = self.info()
        missing = unregistered(info, arns)
        if not missing:
            return
        names = ", ".join(self.secrets.name(c) for c in missing)
        who = " and ".join(f"{users[c]!r} ({c.value})" for c in missing)
        # The command on a line of its own, to be pasted.
        raise ConfigurationError(
            f"RDS Proxy {self.name} cannot log in as {who}: its Auth list lacks secret(s) "
            f"{names}; register them with the command on the next line (it keeps the "
            f"proxy's other secrets), then run this command again; {done}\n"
            f"{modify_command(info, arns, missing, self.layout.env)}"
        )


class _Lazy:
    """A boto3 client made at its first use (most commands never call it)."""

    def __init__(self, service: str, setting: ProxySetting) -> None:
        self._service = service
        self._setting = setting
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = client(self._service, self._setting.region)
        return getattr(self._client, name)


def kms_key_of(store: Store) -> str | None:
    """The KMS key the store writes secure values with, when it is one of the operator's
    (None: the store has no keys, or uses SSM's own; Secrets Manager then uses its own)."""
    from ...stores.ssm_keys import DEFAULT_KEY

    key = store.write_key
    return None if key in (None, DEFAULT_KEY) else key


def store_region(store: Store) -> str:
    """The region of the store when it is SSM, else boto3's (``AWS_REGION``...)."""
    from ...stores.ssm import SsmStore

    inner = getattr(store, "inner", store)  # the lock's fence wraps the store
    if isinstance(inner, SsmStore) and inner.region:
        return inner.region
    import boto3

    region = boto3.session.Session().region_name
    if not region:
        raise ConfigurationError(
            "no AWS region for the RDS Proxy: set AWS_REGION, or use an ssm://REGION store"
        )
    return str(region)


def for_env(store: Store, layout: Layout, values: dict[str, str] | None = None) -> RdsProxy | None:
    """The env's RDS Proxy as recorded in the store, or None."""
    setting = read_setting(store, layout, values)
    return None if setting is None else RdsProxy(setting, layout, kms_key=kms_key_of(store))


def attach(
    store: Store,
    layout: Layout,
    name: str,
    *,
    engine: str,
    endpoint: str | None,
    urls: Mapping[Color, DbUrl],
    direct: DbUrl,
    done: str,
) -> RdsProxy:
    """Put an env behind RDS Proxy *name*: check the proxy and that neither secret is
    scheduled for deletion, write both colors' secrets (*urls*: each color's login), and
    check that the proxy lists them.

    Raises before anything else changed (the secrets aside: they must exist before
    the proxy can list them), with the command that registers them; *done* says what
    the caller changed before. The caller records :attr:`RdsProxy.setting` once its
    own changes are done.
    """
    validate_name(name)
    region = store_region(store)
    rds = client("rds", region)
    info = describe_proxy(rds, name, region)
    family = _FAMILIES.get(engine, engine.upper())
    if info.engine_family and info.engine_family != family:
        raise ConfigurationError(
            f"RDS Proxy {name} is for {info.engine_family} but env {layout.env!r} is "
            f"{engine}: name the proxy in front of this database; nothing was changed"
        )
    if endpoint is not None:
        where = given_endpoint(endpoint, engine)
    else:
        where = endpoint_text(info.endpoint, PROXY_PORTS.get(engine, 5432))
    setting = ProxySetting(name, region, where, given=endpoint is not None)
    proxy = RdsProxy(setting, layout, kms_key=kms_key_of(store), rds=rds, info=info)
    for color in urls:
        proxy.secrets.live(color, done)
    for color, url in urls.items():
        proxy.write_secret(color, url, engine=engine, direct=direct, done=done)
    users = {color: url.user for color, url in urls.items()}
    proxy.require_registered(users, done=f"its secrets were written; {done}")
    return proxy
