"""The two Secrets Manager secrets through which RDS Proxy logs in as each color.

One secret per color, named by :meth:`~credflip.layout.Layout.proxy_secret`
(``credflip/db/prod/blue``), in the format RDS Proxy reads: JSON with
``username``, ``password``, ``engine``, ``host``, ``port`` and ``dbname``.
credflip creates them (tagged with the env, the prefix and the color, under
the store's KMS key when it has one) and writes a color's in prepare, right
after its password changed and before verify logs in through the proxy. It
never reads a secret's value back: only ``DescribeSecret``.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ...errors import ConfigurationError
from ...layout import Color, Layout
from ...urls import DbUrl
from .aws import error_code, translate

__all__ = ["ENGINES", "ProxySecrets", "secret_value"]

#: The ``engine`` of an RDS secret, by credflip's engine name.
ENGINES = {"postgresql": "postgres", "mysql": "mysql"}


def secret_value(url: DbUrl, *, engine: str, host: str, port: int) -> str:
    """The secret's JSON for the login of *url* (its user, password and database) on the
    database at *host*:*port* (the proxy's target, not the proxy)."""
    data: dict[str, Any] = {
        "username": url.user,
        "password": url.password or "",
        "engine": ENGINES.get(engine, engine),
        "host": host,
        "port": port,
    }
    if url.database:
        data["dbname"] = url.database
    return json.dumps(data)


class ProxySecrets:
    """The env's two secrets, through one Secrets Manager client."""

    def __init__(self, client: Any, layout: Layout, *, kms_key: str | None, region: str) -> None:
        self.client = client
        self.layout = layout
        self.region = region
        #: The store's KMS key: the secrets are encrypted under it (None: the account's
        #: ``aws/secretsmanager`` key).
        self.kms_key = kms_key
        self._arns: dict[Color, str] = {}

    def name(self, color: Color) -> str:
        """The secret of *color*."""
        return self.layout.proxy_secret(color)

    def describe(self, color: Color) -> dict[str, Any] | None:
        """``DescribeSecret`` of *color*'s secret; None when it does not exist."""
        name = self.name(color)
        try:
            found: dict[str, Any] = self.client.describe_secret(SecretId=name)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise translate(exc, "secretsmanager:DescribeSecret", name, key=self.kms_key) from exc
        self._arns[color] = str(found["ARN"])
        return found

    def live(self, color: Color, done: str) -> dict[str, Any] | None:
        """``DescribeSecret`` of *color*'s secret (None when it does not exist); raise
        while it is scheduled for deletion (RDS Proxy cannot read it, and it takes no new
        value), with the command that restores it. *done* says what the caller changed."""
        found = self.describe(color)
        deleted = None if found is None else found.get("DeletedDate")
        if not deleted:
            return found
        when = deleted.isoformat(" ", "seconds") if hasattr(deleted, "isoformat") else deleted
        name = self.name(color)
        where = f"--region {shlex.quote(self.region)} --secret-id {shlex.quote(name)}"
        restore = f"aws secretsmanager restore-secret {where}"
        raise ConfigurationError(
            f"secret {name} is scheduled for deletion (DeletedDate {when}): RDS Proxy cannot log "
            f"in with it and it takes no new value; restore it with the command on the next "
            f"line, then run this command again; {done}\n{restore}"
        )

    def tags(self, color: Color) -> list[dict[str, str]]:
        """What the secrets are tagged with: who manages them, and for which env and color."""
        return [
            {"Key": "credflip:managed-by", "Value": "credflip"},
            {"Key": "credflip:env", "Value": self.layout.env},
            {"Key": "credflip:prefix", "Value": self.layout.prefix},
            {"Key": "credflip:color", "Value": color.value},
        ]

    def write(self, color: Color, value: str, *, done: str) -> str:
        """Make *value* the current version of *color*'s secret, creating it when missing
        (and tagging it when a tag is missing); return its ARN. Refused while the secret
        is scheduled for deletion (:meth:`live`; *done* says what the caller changed)."""
        found = self.live(color, done)
        name = self.name(color)
        if found is None:
            return self._create(color, value)
        try:
            self.client.put_secret_value(SecretId=name, SecretString=value)
        except Exception as exc:
            raise translate(exc, "secretsmanager:PutSecretValue", name, key=self.kms_key) from exc
        missing = [t for t in self.tags(color) if t not in (found.get("Tags") or [])]
        if missing:
            self._tag(name, missing)
        return self._arns[color]

    def _create(self, color: Color, value: str) -> str:
        name = self.name(color)
        kwargs: dict[str, Any] = {
            "Name": name,
            "Description": (
                f"credflip: how RDS Proxy logs in as the {color.value} user of env "
                f"{self.layout.env}; written by every rotation"
            ),
            "SecretString": value,
            "Tags": self.tags(color),
        }
        if self.kms_key:
            kwargs["KmsKeyId"] = self.kms_key
        try:
            made = self.client.create_secret(**kwargs)
        except Exception as exc:
            raise translate(exc, "secretsmanager:CreateSecret", name, key=self.kms_key) from exc
        self._arns[color] = str(made["ARN"])
        return self._arns[color]

    def _tag(self, name: str, tags: list[dict[str, str]]) -> None:
        try:
            self.client.tag_resource(SecretId=name, Tags=tags)
        except Exception as exc:
            raise translate(exc, "secretsmanager:TagResource", name) from exc
