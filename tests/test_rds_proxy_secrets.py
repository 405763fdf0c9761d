"""RDS Proxy's secrets: the proxy's Auth list names each by its ARN, and a secret deleted
(for good, or scheduled for deletion) or taken off the list refuses a rotation before
anything changes, with the command that fixes it on a line of its own.

Real boto3 against moto's server and a real PostgreSQL, as in test_rds_proxy.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from apps import App
from helpers import env_params, stored_url
from proxies import REGION, Aws, behind_proxy, command_in

from credflip.errors import ConfigurationError
from credflip.layout import Color, Layout
from credflip.poolers.rds_proxy.registration import ProxyInfo
from credflip.poolers.rds_proxy.setting import ProxySetting, is_proxy_host
from credflip.rotation import RotateOptions, read_pointer, rotate
from credflip.state import load_state

FAST = RotateOptions(client_ttl=0.2, quiet=0.4)


def test_a_secret_deleted_and_created_again_is_not_taken_for_the_one_the_proxy_lists(
    app: App, aws: Aws, layout: Layout
) -> None:
    """The proxy's Auth list names the secret by its full ARN; one created again under the
    same name has another ARN (a new random suffix), which the proxy cannot read."""
    store = aws.store()
    name = behind_proxy(aws, store, layout, app)
    old_arn = aws.described(layout, Color.BLUE)["ARN"]
    aws.secretsmanager.delete_secret(
        SecretId=layout.proxy_secret(Color.BLUE), ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(ConfigurationError, match=" is gone: delete "):
        rotate(store, layout, admin_url=app.admin_url, options=FAST)
    store.delete(layout.rds_proxy)  # as the message says, then rotate --rds-proxy again
    again = RotateOptions(
        client_ttl=0.2, quiet=0.4, rds_proxy=name, rds_proxy_endpoint=f"localhost:{app.url.port}"
    )
    with pytest.raises(ConfigurationError) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=again)
    new_arn = aws.described(layout, Color.BLUE)["ARN"]
    assert new_arn != old_arn and old_arn in [a["SecretArn"] for a in aws.auth(name)]
    assert str(caught.value).startswith(
        f"RDS Proxy {name} cannot log in as {app.user!r} (blue): its Auth list lacks "
        f"secret(s) credflip/db/{layout.env}/blue; register them"
    )
    # The command lists the new secret instead of the deleted one, and keeps the rest.
    auth = aws.register(name, command_in(str(caught.value)))
    listed = [a["SecretArn"] for a in auth]
    assert new_arn in listed and old_arn not in listed and len(listed) == 3
    assert rotate(store, layout, admin_url=app.admin_url, options=again).finished


def test_a_secret_scheduled_for_deletion_refuses_with_the_command_that_restores_it(
    app: App, aws: Aws, layout: Layout, cli: Any
) -> None:
    """Secrets Manager keeps a deleted secret for its recovery window: RDS Proxy cannot
    read it, and PutSecretValue refuses it. Refused before anything changes."""
    store = aws.store()
    name = behind_proxy(aws, store, layout, app)
    secret = layout.proxy_secret(Color.GREEN)
    aws.secretsmanager.delete_secret(SecretId=secret, RecoveryWindowInDays=7)
    assert aws.described(layout, Color.GREEN)["DeletedDate"]
    before = env_params(store, layout)
    args = ["rotate", "--env", layout.env, "--store", store.url, "--admin-url",
            app.admin_url.secret, "--yes", "--client-ttl", "200ms", "--quiet", "400ms"]  # fmt: skip
    # Behind the proxy; and put behind it again (its setting deleted): before any write.
    attach = [*args, "--rds-proxy", name, "--rds-proxy-endpoint", f"localhost:{app.url.port}"]
    blue = aws.described(layout, Color.BLUE)["VersionIdsToStages"]
    setting = store.get(layout.rds_proxy) or ""
    commands: list[str] = []
    for run in (args, attach):
        if run is attach:
            store.delete(layout.rds_proxy)
        refused = cli(*run)
        assert refused.code == 1, refused.text
        message, command = refused.err.splitlines()
        assert message.startswith(
            f"credflip: error: secret {secret} is scheduled for deletion (DeletedDate "
        )
        assert message.endswith(
            "RDS Proxy cannot log in with it and it takes no new value; restore it with the "
            "command on the next line, then run this command again; nothing was changed"
        )
        commands.append(command)
        assert load_state(store, layout).current is None
        assert aws.described(layout, Color.BLUE)["VersionIdsToStages"] == blue
    assert (
        commands
        == [f"aws secretsmanager restore-secret --region {REGION} --secret-id {secret}"] * 2
    )
    store.put(layout.rds_proxy, setting, secure=False)
    assert env_params(store, layout) == before
    # Run as printed, then again.
    options = dict(zip(*[iter(shlex.split(commands[0])[3:])] * 2, strict=True))
    assert options["--region"] == REGION
    aws.secretsmanager.restore_secret(SecretId=options["--secret-id"])
    done = cli(*args)
    assert done.code == 0, done.text
    assert (
        aws.secret(layout, Color.GREEN)["password"]
        == stored_url(store, layout, Color.GREEN).password
    )


def test_a_rotation_refuses_with_the_command_while_a_secret_is_off_the_proxy(
    app: App, aws: Aws, layout: Layout, cli: Any
) -> None:
    store = aws.store()
    name = behind_proxy(aws, store, layout, app)
    aws.unregister(name, aws.described(layout, Color.GREEN)["ARN"])
    before = env_params(store, layout)
    args = ["rotate", "--env", layout.env, "--store", store.url, "--admin-url",
            app.admin_url.secret, "--yes", "--client-ttl", "200ms", "--quiet", "400ms"]  # fmt: skip
    refused = cli(*args)
    assert refused.code == 1, refused.text
    assert refused.err.startswith(
        f"credflip: error: RDS Proxy {name} cannot log in as {app.green!r} (green): its Auth "
        f"list lacks secret(s) credflip/db/{layout.env}/green; register them"
    )
    message, command = refused.err.splitlines()
    assert message.endswith("nothing was changed") and command == command_in(refused.err)
    assert env_params(store, layout) == before
    auth = aws.register(name, command_in(refused.err))
    assert [a.get("Description") for a in auth] == [
        "reporting",
        f"credflip blue user of env {layout.env}",
        f"credflip green user of env {layout.env}",
    ]
    done = cli(*args)
    assert done.code == 0, done.text
    assert read_pointer(store, layout) is Color.GREEN
    shown = cli("status", "--env", layout.env, "--store", store.url)
    assert f"behind RDS Proxy {name} at localhost:{app.url.port}: it logs in with " in shown.out
    assert app.password not in refused.text + done.text


def test_the_setting_and_the_auth_list_by_name() -> None:
    setting = ProxySetting(
        "app-proxy", REGION, "app-proxy.proxy-c9abc.us-east-1.rds.amazonaws.com:5432"
    )
    assert ProxySetting.from_json(setting.to_json(), where="x") == setting
    assert setting.is_endpoint("APP-PROXY.proxy-c9abc.us-east-1.rds.amazonaws.com")
    assert setting.is_endpoint("reader.endpoint.proxy-c9abc.us-east-1.rds.amazonaws.com")
    assert not setting.is_endpoint("app.cluster-c9abc.us-east-1.rds.amazonaws.com")
    assert not is_proxy_host("db.internal")
    with pytest.raises(ConfigurationError, match="not a valid RDS Proxy setting"):
        ProxySetting.from_json('{"name": "x"}', where="/db/e/rds-proxy")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:credflip/db/prod/blue-AbC123"
    info = ProxyInfo("p", REGION, "POSTGRESQL", "p.x", auth=({"SecretArn": arn[:-7]},))
    assert info.has_secret(arn)  # the partial ARN names whichever secret has the name
    assert not info.has_secret(arn.replace("blue", "green"))
    # The full ARN of a secret deleted since, created again under the same name: not it.
    stale = ProxyInfo("p", REGION, "POSTGRESQL", "p.x", auth=({"SecretArn": arn},))
    assert stale.has_secret(arn)
    assert not stale.has_secret(arn[:-6] + "XyZ789")


def test_a_kms_refusal_names_the_key_rights_secrets_manager_needs() -> None:
    """Writing a secret under a customer key takes kms:GenerateDataKey and kms:Decrypt on it
    (what deploy/template.yaml grants the rotator, through Secrets Manager), not
    kms:Encrypt: the refusal says what to allow. (The error as Secrets Manager returns it;
    moto does not check key policies.)"""
    from botocore.exceptions import ClientError

    from credflip.errors import StoreAccessDenied
    from credflip.poolers.rds_proxy.aws import translate

    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "Access to KMS is not allowed"}},
        "PutSecretValue",
    )
    error = translate(denied, "secretsmanager:PutSecretValue", "credflip/db/prod/green", key=key)
    assert isinstance(error, StoreAccessDenied)
    assert f"allow kms:GenerateDataKey and kms:Decrypt on key {key}" in str(error)
    assert "kms:Encrypt" not in str(error)
