"""RDS Proxy: the two secrets, the proxy's Auth list, verify through the proxy.

Real boto3 against moto's server (RDS, Secrets Manager, KMS, SSM) and a real
PostgreSQL. "The proxy" that verify logs in through is the same local server
under another name (``--rds-proxy-endpoint localhost:PORT``; the colors' URLs
say 127.0.0.1): moto's proxy endpoint accepts no connection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from apps import App, serial
from helpers import env_params, stored_url
from proxies import REGION, Aws, behind_proxy, command_in

from credflip import commands
from credflip.demo.binaries import free_port
from credflip.errors import ConfigurationError, CredflipError, UsageError
from credflip.layout import Color, Layout
from credflip.poolers.rds_proxy.setting import ProxySetting
from credflip.rotation import (
    Event,
    Notice,
    PhaseStarted,
    RotateOptions,
    plan_rotation,
    read_pointer,
    rotate,
)
from credflip.state import Phase

FAST = RotateOptions(client_ttl=0.2, quiet=0.4)


def test_init_stops_with_the_command_that_registers_both_secrets_then_goes_behind_the_proxy(
    app: App, aws: Aws, cli: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs every request body: the secret too
    layout = Layout(f"px{serial()}")
    store = aws.store()
    name = aws.proxy()
    before = aws.auth(name)
    args = ["init", "--env", layout.env, "--store", store.url, "--admin-url",
            app.admin_url.secret, "--writer-url", app.url.secret, "--rds-proxy", name,
            "--rds-proxy-endpoint", f"localhost:{app.url.port}"]  # fmt: skip
    first = cli(*args)
    assert first.code == 1, first.text
    assert first.err.startswith(f"credflip: error: RDS Proxy {name} cannot log in as ")
    # The command on a line of its own, to be pasted.
    message, command = first.err.splitlines()
    assert message.endswith(
        "register them with the command on the next line (it keeps the proxy's other "
        "secrets), then run this command again; its secrets were written; nothing else was "
        "changed"
    )
    assert command.startswith(f"aws rds modify-db-proxy --region {REGION} --db-proxy-name {name}")
    # Nothing else changed: no parameter, no green user.
    assert env_params(store, layout) == []
    assert not app.user_exists(app.green)
    # Both secrets exist in the proxy's format, under the store's key, tagged.
    blue, green = aws.secret(layout, Color.BLUE), aws.secret(layout, Color.GREEN)
    assert blue == {
        "username": app.user,
        "password": app.password,
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": app.url.port,
        "dbname": app.database,
    }
    assert green["username"] == app.green and green["password"] not in ("", app.password)
    for color in Color:
        described = aws.described(layout, color)
        assert described["KmsKeyId"] == aws.key
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags == {
            "credflip:managed-by": "credflip",
            "credflip:env": layout.env,
            "credflip:prefix": "/db",
            "credflip:color": color.value,
        }
    # The command keeps the proxy's other secret and adds both, as the API takes them.
    auth = aws.register(name, command_in(first.err))
    assert auth[0] == {k: before[0][k] for k in auth[0]}
    assert [a["SecretArn"] for a in auth[1:]] == [aws.described(layout, c)["ARN"] for c in Color]
    assert {a["ClientPasswordAuthType"] for a in auth} == {"POSTGRES_SCRAM_SHA_256"}

    second = cli(*args)
    assert second.code == 0, second.text
    assert f"behind RDS Proxy {name}: it logs in with secrets credflip/db/{layout.env}/blue" in (
        second.out
    )
    setting = ProxySetting.from_json(store.get(layout.rds_proxy) or "", where="test")
    assert setting == ProxySetting(name, REGION, f"localhost:{app.url.port}", given=True)
    assert aws.secret(layout, Color.BLUE)["password"] == app.password
    for secret in (app.password, green["password"]):
        assert secret not in first.text + second.text + caplog.text
    assert '"SecretString": "***"' in caplog.text or "'SecretString': '***'" in caplog.text


def test_each_rotation_writes_the_new_colors_secret_before_verify_logs_in_through_the_proxy(
    app: App, aws: Aws, layout: Layout
) -> None:
    store = aws.store()
    name = behind_proxy(aws, store, layout, app)
    plan = plan_rotation(store, layout, admin_url=app.admin_url, options=FAST)
    green = f"postgresql://{app.green}:***@localhost:{app.url.port}/{app.database}"
    assert f"RDS Proxy {name} ({green})" in plan.verify
    (secret,) = [p for p in plan.parameters if p.kind == "Secrets Manager secret"]
    assert (secret.name, secret.when) == (
        f"credflip/db/{layout.env}/green",
        "prepare, before verify",
    )
    assert secret.value == f'{{"username": "{app.green}", "password": "***", ...}}'
    seen: dict[Color, str] = {}

    def at_verify(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase is Phase.VERIFY:
            seen[event.to_color] = aws.secret(layout, event.to_color)["password"]

    for to in (Color.GREEN, Color.BLUE):
        old = aws.secret(layout, to.other)
        result = rotate(store, layout, admin_url=app.admin_url, options=FAST, on_event=at_verify)
        assert result.finished and result.to_color is to
        password = stored_url(store, layout, to).password
        # Written in prepare, before verify; the old color's is left as it was.
        assert seen[to] == password
        assert aws.secret(layout, to)["password"] == password
        assert aws.secret(layout, to)["username"] == result.to_user
        assert aws.secret(layout, to.other) == old
        assert aws.described(layout, to)["KmsKeyId"] == aws.key
    assert len(seen) == 2
    assert commands.status(store, layout).to_dict()["rds_proxy"] == {
        "name": name,
        "endpoint": f"localhost:{app.url.port}",
        "secrets": [f"credflip/db/{layout.env}/blue", f"credflip/db/{layout.env}/green"],
    }


def test_verify_really_logs_in_through_the_proxy(app: App, aws: Aws, layout: Layout) -> None:
    """Where "the proxy" accepts no connection, verify stops and the pointer stays."""
    store = aws.store()
    closed = free_port()
    name = behind_proxy(aws, store, layout, app, endpoint=f"localhost:{closed}")
    options = RotateOptions(client_ttl=0.2, quiet=0.4, reconnect_timeout=0.5)
    with pytest.raises(CredflipError) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=options)
    assert f"localhost:{closed}" in str(caught.value)
    assert read_pointer(store, layout) is Color.BLUE
    assert app.password not in str(caught.value)
    # A secret deleted behind credflip's back: the resumed rotation says how to write it again.
    aws.secretsmanager.delete_secret(
        SecretId=layout.proxy_secret(Color.GREEN), ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(ConfigurationError) as gone:
        rotate(store, layout, admin_url=app.admin_url, options=options)
    assert str(gone.value).startswith(
        f"secret credflip/db/{layout.env}/green of RDS Proxy {name} is gone: delete "
        f"{layout.rds_proxy} and run 'credflip rotate --env {layout.env} --rds-proxy {name}'"
    )


def test_rds_proxy_endpoint_moves_where_the_envs_proxy_is_reached(
    app: App, aws: Aws, layout: Layout
) -> None:
    """Given for the env's own proxy, --rds-proxy-endpoint is used and recorded, not ignored."""
    store = aws.store()
    name = behind_proxy(aws, store, layout, app)
    closed, where = free_port(), f"localhost:{app.url.port}"
    moved = RotateOptions(
        client_ttl=0.2,
        quiet=0.4,
        reconnect_timeout=0.5,
        rds_proxy=name,
        rds_proxy_endpoint=f"LOCALHOST:{closed}",
    )
    events: list[Event] = []
    with pytest.raises(CredflipError) as caught:
        rotate(store, layout, admin_url=app.admin_url, options=moved, on_event=events.append)
    assert f"localhost:{closed}" in str(caught.value)  # verify went through it
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert f"RDS Proxy {name} is reached at localhost:{closed} (was {where})" in notes

    def recorded() -> str:
        return ProxySetting.from_json(store.get(layout.rds_proxy) or "", where="test").endpoint

    assert recorded() == f"localhost:{closed}"
    back = dataclasses.replace(moved, rds_proxy_endpoint=where)
    assert rotate(store, layout, admin_url=app.admin_url, options=back).finished
    assert recorded() == where


def test_a_managed_env_goes_behind_a_proxy_from_the_lambda_event(
    app: App, aws: Aws, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_aws_lambda import LambdaContext

    from credflip.aws_lambda import handler

    store = aws.store()
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    monkeypatch.setenv("CREDFLIP_STORE", store.url)
    name = aws.proxy()
    event = {"env": layout.env, "client_ttl": "200ms", "quiet": "400ms", "margin": "500ms",
             "rds_proxy": name, "rds_proxy_endpoint": f"localhost:{app.url.port}"}  # fmt: skip
    before = env_params(store, layout)
    with pytest.raises(ConfigurationError) as caught:
        handler(event, LambdaContext(60))
    assert (
        str(caught.value).splitlines()[0].endswith("its secrets were written; nothing was changed")
    )
    assert env_params(store, layout) == before
    aws.register(name, command_in(str(caught.value)))
    summary = handler(event, LambdaContext(60))
    assert summary["status"] == "done", summary
    assert json.loads(store.get(layout.rds_proxy) or "{}")["name"] == name
    assert (
        aws.secret(layout, Color.GREEN)["password"]
        == stored_url(store, layout, Color.GREEN).password
    )
    # Another proxy for the same env is refused; an empty one is the env's own.
    with pytest.raises(ConfigurationError, match=f"is behind RDS Proxy {name}, not other"):
        handler({**event, "rds_proxy": "other"}, LambdaContext(60))
    with pytest.raises(UsageError, match="invalid rds_proxy 5: use a string"):
        handler({**event, "rds_proxy": 5}, LambdaContext(60))
    own = {**event, "rds_proxy": "", "rds_proxy_endpoint": ""}
    assert handler(own, LambdaContext(60))["status"] == "done"


def test_urls_through_the_proxy_are_verified_directly_and_through_it_and_watch_no_proxy(
    app: App, aws: Aws, layout: Layout, cli: Any
) -> None:
    """The colors' URLs name the proxy (as the applications use it): the drain does not take
    the proxy for an instance, and verify logs in directly at the primary too."""
    store = aws.store()
    via = app.url.__class__.parse(app.url.secret.replace("127.0.0.1", "localhost"))
    name = aws.proxy()
    kwargs = {"admin_url": app.admin_url, "writer_url": via, "rds_proxy": name,
              "rds_proxy_endpoint": f"localhost:{app.url.port}"}  # fmt: skip
    with pytest.raises(ConfigurationError) as caught:
        commands.init(store, layout, **kwargs)  # type: ignore[arg-type]
    aws.register(name, command_in(str(caught.value)))
    result = commands.init(store, layout, **kwargs)  # type: ignore[arg-type]
    assert [i.source for i in result.instances] == ["admin URL"]
    # The secret names the database behind the proxy, not the proxy.
    assert aws.secret(layout, Color.BLUE)["host"] == "127.0.0.1"
    plan = plan_rotation(store, layout, admin_url=app.admin_url, options=FAST)
    assert [v.split(" (")[0] for v in plan.verify] == [
        f"writer URL directly at 127.0.0.1:{app.url.port}",
        f"writer URL through RDS Proxy {name}",
    ]
    dry = cli("rotate", "--env", layout.env, "--store", store.url, "--admin-url",
              app.admin_url.secret, "--dry-run")  # fmt: skip
    assert dry.code == 0, dry.text
    assert (
        f"    credflip/db/{layout.env}/green  Secrets Manager secret  "
        f'{{"username": "{app.green}", "password": "***", ...}}  (prepare, before verify)'
    ) in dry.out
    assert rotate(store, layout, admin_url=app.admin_url, options=FAST).finished


def test_a_proxy_for_another_engine_or_none_at_all_is_refused_before_anything(
    app: App, aws: Aws, layout: Layout, cli: Any
) -> None:
    store = aws.store()
    mysql = aws.proxy(family="MYSQL")
    base = ["init", "--env", layout.env, "--store", store.url, "--admin-url",
            app.admin_url.secret, "--writer-url", app.url.secret]  # fmt: skip
    wrong = cli(*base, "--rds-proxy", mysql)
    assert wrong.code == 1 and f"RDS Proxy {mysql} is for MYSQL but env" in wrong.err
    missing = cli(*base, "--rds-proxy", "no-such-proxy")
    assert missing.code == 1 and "no RDS Proxy named 'no-such-proxy'" in missing.err
    bad = cli(*base, "--rds-proxy", "1-bad--name")
    assert bad.code == 2 and bad.err.startswith(
        "credflip: error: invalid --rds-proxy '1-bad--name'"
    )
    for result in (wrong, missing, bad):
        assert result.err.count("\n") == 1
    assert env_params(store, layout) == []
    assert not app.user_exists(app.green)
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        aws.described(layout, Color.BLUE)
    with pytest.raises(UsageError, match="--rds-proxy-endpoint goes with --rds-proxy"):
        RotateOptions(rds_proxy_endpoint="localhost:5432")
