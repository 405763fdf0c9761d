"""RDS Proxy on moto for the tests: a proxy, its Auth list, and the env's secrets.

moto implements CreateDBProxy, DescribeDBProxies and DeleteDBProxy but not
ModifyDBProxy: :meth:`Aws.register` runs the ``--auth`` of the command credflip
prints by creating the proxy again with that list. moto's proxy endpoint
accepts no database connection: the tests name where "the proxy" is with
``--rds-proxy-endpoint`` (a real local server under another name).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import boto3
from apps import serial
from botocore.validate import validate_parameters

from credflip import commands
from credflip.errors import ConfigurationError
from credflip.layout import Color, Layout
from credflip.stores.ssm import SsmStore

REGION = "us-east-1"
#: The command in credflip's refusal: a line of its own.
COMMAND = re.compile(r"^(aws rds modify-db-proxy .*)$", re.MULTILINE)


@dataclass
class Aws:
    """moto's RDS, Secrets Manager and KMS, with a VPC for proxies and a KMS key."""

    endpoint: str
    rds: Any
    secretsmanager: Any
    key: str
    subnets: list[str]

    def store(self, *, key: bool = True) -> SsmStore:
        """An SSM store on moto, writing under the test's KMS key (or SSM's own)."""
        return SsmStore(
            region=REGION, endpoint_url=self.endpoint, kms_key_id=self.key if key else None
        )

    def proxy(self, *auth: dict[str, str], family: str = "POSTGRESQL") -> str:
        """A new proxy whose Auth list holds *auth*, and an unrelated secret (another app's)."""
        name = f"app-proxy-{serial()}"
        other = self.secretsmanager.create_secret(
            Name=f"reporting/{name}", SecretString=json.dumps({"username": "reporting"})
        )
        entry = {
            "AuthScheme": "SECRETS",
            "SecretArn": other["ARN"],
            "IAMAuth": "DISABLED",
            "Description": "reporting",
            "ClientPasswordAuthType": "POSTGRES_SCRAM_SHA_256",
        }
        self._create(name, [entry, *auth], family)
        return name

    def _create(self, name: str, auth: list[dict[str, str]], family: str = "POSTGRESQL") -> None:
        self.rds.create_db_proxy(
            DBProxyName=name,
            EngineFamily=family,
            Auth=auth,
            RoleArn="arn:aws:iam::123456789012:role/proxy",
            VpcSubnetIds=self.subnets,
        )

    def auth(self, name: str) -> list[dict[str, str]]:
        """The proxy's Auth list."""
        return list(self.rds.describe_db_proxies(DBProxyName=name)["DBProxies"][0]["Auth"])

    def register(self, name: str, command: str) -> list[dict[str, str]]:
        """Run *command* (credflip's ``aws rds modify-db-proxy``) as AWS would: its
        arguments valid for the API, its ``--auth`` the proxy's whole new list."""
        args = shlex.split(command)
        assert args[:3] == ["aws", "rds", "modify-db-proxy"], args
        options = dict(zip(args[3::2], args[4::2], strict=True))
        assert options["--db-proxy-name"] == name and options["--region"] == REGION
        auth = json.loads(options["--auth"])
        model = self.rds.meta.service_model.operation_model("ModifyDBProxy")
        validate_parameters({"DBProxyName": name, "Auth": auth}, model.input_shape)
        family = self.rds.describe_db_proxies(DBProxyName=name)["DBProxies"][0]["EngineFamily"]
        self.rds.delete_db_proxy(DBProxyName=name)
        self._create(name, auth, family)
        return list(auth)

    def unregister(self, name: str, arn: str) -> None:
        """Take the secret *arn* off the proxy's Auth list."""
        auth = [a for a in self.auth(name) if a["SecretArn"] != arn]
        self.rds.delete_db_proxy(DBProxyName=name)
        self._create(name, auth)

    def secret(self, layout: Layout, color: Color) -> dict[str, Any]:
        """The current value of the env's secret of *color* (read only by the test)."""
        value = self.secretsmanager.get_secret_value(SecretId=layout.proxy_secret(color))
        return dict(json.loads(value["SecretString"]))

    def described(self, layout: Layout, color: Color) -> dict[str, Any]:
        return dict(self.secretsmanager.describe_secret(SecretId=layout.proxy_secret(color)))


def make_aws(endpoint: str) -> Aws:
    """Clients on moto, a VPC with two subnets and a KMS key."""

    def client(name: str) -> Any:
        return boto3.client(name, region_name=REGION, endpoint_url=endpoint)

    ec2 = client("ec2")
    n = serial() % 200
    vpc = ec2.create_vpc(CidrBlock=f"10.{n}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{n}.{i}.0/24")["Subnet"]["SubnetId"]
        for i in (1, 2)
    ]
    key = client("kms").create_key()["KeyMetadata"]["Arn"]
    return Aws(endpoint, client("rds"), client("secretsmanager"), key, subnets)


def command_in(message: str) -> str:
    """The ``aws rds modify-db-proxy`` credflip's refusal names."""
    found = COMMAND.search(message)
    assert found is not None, message
    return found.group(1)


def behind_proxy(
    aws: Aws, store: SsmStore, layout: Layout, app: Any, *, endpoint: str | None = None
) -> str:
    """Init *app*'s env behind a new proxy, registering its secrets as the operator would
    (init's first run stops with the command); returns the proxy's name."""
    name = aws.proxy()
    where = endpoint or f"localhost:{app.url.port}"
    kwargs = {"admin_url": app.admin_url, "writer_url": app.url}
    try:
        commands.init(store, layout, rds_proxy=name, rds_proxy_endpoint=where, **kwargs)
    except ConfigurationError as exc:
        aws.register(name, command_in(str(exc)))
    else:
        raise AssertionError("init put the env behind a proxy that did not list its secrets")
    commands.init(store, layout, rds_proxy=name, rds_proxy_endpoint=where, **kwargs)
    return name
