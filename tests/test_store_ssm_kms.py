"""A store URL that names a KMS key keeps it: ``store.url``, init's ``next:`` line and
``status`` name it again, so every SecureString credflip writes is under that key
(moto's server mode; the template's ``CREDFLIP_STORE`` is checked in test_deploy)."""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from apps import make_my_app
from clusters import Mariadb

from credflip.layout import Color, Layout
from credflip.stores import open_store
from credflip.stores.ssm import SsmStore


@pytest.fixture
def kms_key(moto_endpoint: str) -> dict[str, str]:
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto_endpoint)
    return dict(kms.create_key()["KeyMetadata"])  # type: ignore[arg-type]


def spec(moto_endpoint: str, key: str | None) -> str:
    return f"ssm://us-east-1?endpoint_url={moto_endpoint}" + (f"&kms_key_id={key}" if key else "")


def keys_under(store: SsmStore, layout: Layout) -> dict[str, str]:
    """Every SecureString of the env, with the key it is encrypted under."""
    pages = store.client.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [f"/db/{layout.env}"]}]
    )
    return {
        p["Name"]: p["KeyId"]
        for page in pages
        for p in page["Parameters"]
        if p["Type"] == "SecureString"
    }


def test_the_store_url_names_the_key_and_opens_the_same_store(
    moto_endpoint: str, kms_key: dict[str, str]
) -> None:
    key = kms_key["Arn"]
    store = open_store(spec(moto_endpoint, key))
    assert isinstance(store, SsmStore)
    assert store.url == spec(moto_endpoint, key)
    again = open_store(store.url)
    assert isinstance(again, SsmStore) and again.kms_key_id == key and again.url == store.url
    assert open_store("ssm://eu-west-1?kms_key_id=alias/credflip").url == (
        "ssm://eu-west-1?kms_key_id=alias/credflip"
    )
    # Which existing SecureStrings another key encrypts: the same key named by its
    # id or its ARN is the same key; SSM's default is another.
    by_id = SsmStore(region="us-east-1", endpoint_url=moto_endpoint, kms_key_id=kms_key["KeyId"])
    by_id.put("/db/kmsids/blue/writer-db-url", "mysql://a:b@h/d", secure=True)
    default = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    default.put("/db/kmsids/green/writer-db-url", "mysql://a:b@h/d", secure=True)
    default.put("/db/kmsids/blue-green-env", "blue")
    names = ["/db/kmsids/blue/writer-db-url", "/db/kmsids/green/writer-db-url"]
    assert store.other_keys([*names, "/db/kmsids/blue-green-env", "/db/kmsids/none"]) == {
        "/db/kmsids/green/writer-db-url": "alias/aws/ssm"
    }
    assert default.other_keys(names) == {"/db/kmsids/blue/writer-db-url": kms_key["KeyId"]}


def test_init_names_the_key_and_every_url_credflip_writes_carries_it(
    mariadb: Mariadb, moto_endpoint: str, kms_key: dict[str, str], cli: Any
) -> None:
    app = make_my_app(mariadb, rich=False)
    key = kms_key["Arn"]
    layout = Layout(f"kms{app.user}")
    store_url = spec(moto_endpoint, key)
    init = cli("init", "--env", layout.env, "--store", store_url, "--save-admin-url",
               "--admin-url", app.admin_url.secret, "--writer-url", app.url.secret)  # fmt: skip
    assert init.code == 0, init.err
    assert "warning" not in init.err
    assert f"initialised in {store_url}" in init.out
    next_line = init.out.strip().splitlines()[-1]
    assert next_line == f"next: credflip rotate --env {layout.env} --store '{store_url}'"
    # The operator runs the next: line as printed (a shell would split it so).
    argv = shlex.split(next_line.removeprefix("next: credflip "))
    rotated = cli(*argv, "--yes", "--client-ttl", "100ms", "--quiet", "100ms")
    assert rotated.code == 0, rotated.err
    status = cli("status", "--env", layout.env, "--store", store_url, "--json")
    assert json.loads(status.out)["store"] == store_url
    with open_store(store_url) as store:
        assert isinstance(store, SsmStore)
        written = keys_under(store, layout)
    assert set(written) == {
        *(layout.url(c, r) for c in Color for r in ("writer", "reader")),
        layout.admin_url,
    }
    assert set(written.values()) == {key}, written


def test_init_warns_once_when_the_envs_urls_are_under_another_key(
    mariadb: Mariadb, moto_endpoint: str, kms_key: dict[str, str], cli: Any
) -> None:
    app = make_my_app(mariadb, rich=False)
    layout = Layout(f"kmsold{app.user}")
    # The application's parameters exist already, under SSM's default key.
    before = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    before.put(layout.pointer, "blue")
    before.put(layout.url(Color.BLUE, "writer"), app.url.secret, secure=True)
    store_url = spec(moto_endpoint, quote(kms_key["Arn"], safe=":/"))
    init = cli("init", "--env", layout.env, "--store", store_url, "--admin-url",
               app.admin_url.secret, "--writer-url", app.url.secret)  # fmt: skip
    assert init.code == 0, init.err
    warnings = [line for line in init.err.splitlines() if "warning" in line]
    assert len(warnings) == 1, init.err
    assert warnings[0].startswith(
        f"credflip: warning: {layout.url(Color.BLUE, 'writer')} is encrypted with key "
        f"alias/aws/ssm, but this store writes with {kms_key['Arn']}"
    )


def test_init_warns_when_the_pooler_url_is_under_another_key(
    mariadb: Mariadb, moto_endpoint: str, kms_key: dict[str, str], cli: Any
) -> None:
    """The pooler's console URL is a SecureString credflip writes too (``init --pooler-url``,
    ``pooler-url``): one left under another key is named like the colors' URLs. Breaks
    when init looks at the colors' and the admin's URLs only."""
    app = make_my_app(mariadb, rich=False)
    layout = Layout(f"kmspool{app.user}")
    before = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    before.put(layout.pooler_url, "pgbouncer://pgbouncer:pw@127.0.0.1:1/pgbouncer",
               secure=True)  # fmt: skip
    store_url = spec(moto_endpoint, kms_key["Arn"])
    init = cli("init", "--env", layout.env, "--store", store_url, "--admin-url",
               app.admin_url.secret, "--writer-url", app.url.secret)  # fmt: skip
    assert init.code == 0, init.err
    warnings = [line for line in init.err.splitlines() if "warning" in line]
    assert warnings == [
        f"credflip: warning: {layout.pooler_url} is encrypted with key alias/aws/ssm, but "
        f"this store writes with {kms_key['Arn']}: every secure value credflip writes moves "
        f"to {kms_key['Arn']}; to keep the key, name it in --store (kms_key_id=KEY)"
    ], init.err
