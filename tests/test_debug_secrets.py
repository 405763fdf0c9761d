"""``--debug`` with secrets in play: the tracebacks of failed runs and every log record at
DEBUG (botocore's request and response bodies included) hold no password: not one
credflip generated, nor the application's, nor the admin's, nor one in a wrong URL.

The SSM store runs on moto; its failure is a real HTTP 500 that botocore retries
(tests/test_store_ssm.py's ``inject_error``) on the write of the new password.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps import App, MyApp
from helpers import leaks, stored_url
from test_store_ssm import inject_error

from credflip.cli import options
from credflip.commands import adopt
from credflip.layout import Color, Layout
from credflip.rotation import new_password
from credflip.rotation.phases import prepare
from credflip.stores import open_store
from credflip.stores.ssm import SsmStore

#: Passwords of wrong URLs: refused by the server, or not even parsed.
WRONG = {"admin": new_password(), "port": new_password()}


@pytest.fixture
def ssm(moto_endpoint: str) -> Iterator[SsmStore]:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield store
    store.close()


def recorded_passwords(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password init and prepare generate from now on, in order."""
    generated: list[str] = []

    def recording() -> str:
        generated.append(new_password())
        return generated[-1]

    monkeypatch.setattr(adopt, "new_password", recording)
    monkeypatch.setattr(prepare, "new_password", recording)
    return generated


def failing_writes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[dict[str, int]]:
    """Every SSM store the CLI opens from now on answers each write of *name* with HTTP
    500; returns the injections, one per store opened."""
    made: list[dict[str, int]] = []

    def names(request: Any) -> bool:
        return bool(json.loads(request.body)["Name"] == name)

    def opening(spec: str | None = None, *, create: bool = False) -> Any:
        store = open_store(spec, create=create)
        assert isinstance(store, SsmStore)
        fault = inject_error(store, "PutParameter", "InternalServerError", status=500, when=names)
        made.append(fault)
        return store

    monkeypatch.setattr(options, "open_store", opening)
    return made


def test_debug_tracebacks_and_logs_hold_no_password(
    any_app: App | MyApp,
    ssm: SsmStore,
    layout: Layout,
    cli: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = any_app
    caplog.set_level(logging.DEBUG)
    generated = recorded_passwords(monkeypatch)
    texts: list[str] = []

    def run(*args: str, code: int = 0) -> Any:
        result = cli("--debug", *args)
        assert result.code == code, result.err
        texts.append(result.text + "".join(result.argv_warnings))
        return result

    common = ["--env", layout.env, "--store", ssm.url]
    admin = ["--admin-url", app.admin_url.secret]
    rotate = ["rotate", *common, "--client-ttl", "0s", "--quiet", "0s", "--yes"]
    run("init", *common, *admin, "--writer-url", app.url.secret)
    run(*rotate, *admin)  # blue to green
    tracebacks = failures(run, rotate, admin, monkeypatch, layout, app)
    run(*rotate, *admin)  # resumes in verify, with the password of the last prepare
    run("status", *common, *admin, "--json")
    run("history", *common, "--json")
    run("resolve", *common, "--json")

    # Every password generated is the one stored or was replaced: the record is complete.
    stored = [stored_url(ssm, layout, color).password or "" for color in Color]
    assert set(stored) <= set(generated) and len(generated) == len(set(generated)) == 4
    # botocore logged the bodies of the writes and reads of URLs, masked.
    bodies = [r.getMessage() for r in caplog.records if r.name == "botocore.endpoint"]
    assert any("PutParameter" in b and "***" in b for b in bodies)
    assert all("Traceback (most recent call last)" in t for t in tracebacks)
    secrets = [*generated, app.password, app.admin_url.password or "", *WRONG.values()]
    found = leaks(secrets, [*texts, caplog.text, app.server_log()])
    assert not found, found


def failures(
    run: Callable[..., Any],
    rotate: list[str],
    admin: list[str],
    monkeypatch: pytest.MonkeyPatch,
    layout: Layout,
    app: App | MyApp,
) -> list[str]:
    """Runs that fail with a traceback, the rotation from green to blue in progress: the
    store refuses the new password, verify's probe fails, the admin's password is wrong,
    a URL does not parse. Returns their standard error."""
    with monkeypatch.context() as patch:
        made = failing_writes(patch, layout.url(Color.BLUE, "writer"))
        stored = run(*rotate, *admin, code=1)
    assert sum(m["sent"] for m in made) >= 2, made  # botocore retried it
    assert "InternalServerError" in stored.err and "PutParameter" in stored.err
    probed = run(*rotate, *admin, "--probe", "SELECT * FROM no_such_table", code=1)
    assert "verify failed" in probed.err and "no_such_table" in probed.err
    wrong = app.admin_url.with_credentials(app.admin_url.user, WRONG["admin"])
    refused = run(*rotate, "--admin-url", wrong.secret, code=1)
    assert "Traceback" in refused.err
    port = wrong.with_credentials(wrong.user, WRONG["port"]).secret.replace(
        f":{wrong.port}/", ":notaport/"
    )
    unparsed = run(*rotate, "--admin-url", port, code=2)
    assert "invalid port" in unparsed.err
    return [stored.err, probed.err, refused.err, unparsed.err]
