"""Resolving through the AWS Parameters and Secrets Lambda Extension: its stand-in
(tests/extension_standin.py) in front of moto's SSM, and boto3 when it gives no value."""

from __future__ import annotations

import http.client
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from apps import serial
from extension_standin import TOKEN, ExtensionStandIn
from helpers import SECRET, Clock, seed, waiting_on_the_read

from credflip import Resolver
from credflip.errors import NotInitialized, StoreError, UsageError
from credflip.layout import Color, Layout
from credflip.stores import open_reader, open_store
from credflip.stores import ssm_extension as extension
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore
from credflip.stores.ssm_extension import SsmExtensionStore, extension_cache_ttl


@pytest.fixture(autouse=True)
def _lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The function's session token, and a process that has logged nothing yet."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setattr(extension, "_told", set())


@pytest.fixture
def ssm(moto_endpoint: str) -> Iterator[SsmStore]:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield store
    store.close()


@pytest.fixture
def layout(ssm: SsmStore) -> Layout:
    return seed(ssm, f"ext{serial()}")


def through(ext: ExtensionStandIn | int, moto: str, **kwargs: Any) -> SsmExtensionStore:
    """A resolver's store reading through *ext* (or whatever listens on that port)."""
    if isinstance(ext, ExtensionStandIn):
        kwargs = {"port": ext.port, "cache_ttl": ext.ttl, **kwargs}
    else:
        kwargs = {"port": ext, "cache_ttl": 0.0, **kwargs}
    return SsmExtensionStore(region="us-east-1", endpoint_url=moto, **kwargs)


def get(port: int, query: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", query, headers={} if token is None else {extension.TOKEN_HEADER: token})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_standin_keeps_the_documented_contract(moto_endpoint: str, ssm: SsmStore) -> None:
    name = f"/standin{serial()}/url"
    ssm.put(name, SECRET, secure=True)
    clock = Clock()
    with ExtensionStandIn(moto_endpoint, ttl=10, clock=clock) as ext:
        path = f"{extension.PATH}?name={name.replace('/', '%2F')}"
        assert get(ext.port, path + "&withDecryption=true", token=None)[0] == 401
        assert get(ext.port, path + "&withDecryption=true", token="another")[0] == 403
        assert get(ext.port, f"{extension.PATH}?withDecryption=true")[0] == 400
        assert get(ext.port, f"{extension.PATH}?name=%2Fno%2Fsuch")[0] == 400
        plain = b'"Value": "' + SECRET.encode() + b'"'
        status, body = get(ext.port, path + "&withDecryption=true")
        assert status == 200 and plain in body
        assert plain not in get(ext.port, path)[1]  # not decrypted (moto: "kms:KEY:value")
        assert get(ext.port, path.replace("get?", "get/?") + "&version=1")[0] == 200
        calls = ext.ssm_calls
        ssm.put(name, "changed", secure=True)
        assert SECRET.encode() in get(ext.port, path + "&withDecryption=true")[1]
        assert ext.ssm_calls == calls  # from its cache, until the TTL is over
        clock.now += 10
        assert b"changed" in get(ext.port, path + "&withDecryption=true")[1]
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext:
        for _ in range(2):
            get(ext.port, path + "&withDecryption=true")
        assert ext.ssm_calls == 2  # TTL 0: no cache


def test_the_extension_resolves_what_boto3_resolves_with_three_requests(
    moto_endpoint: str, ssm: SsmStore, layout: Layout
) -> None:
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext:
        store = through(ext, moto_endpoint)
        got = Resolver(store=store, ttl=60).resolve(layout.env)
        assert ext.requests == 3 and store._direct is None  # no boto3 store opened
    assert got == Resolver(store=ssm, ttl=60).resolve(layout.env)


def test_a_flip_reaches_a_lambda_within_the_client_ttl(
    moto_endpoint: str, ssm: SsmStore, layout: Layout
) -> None:
    """Other code of the function reads the pointer through the same extension just
    before the flip, so the extension may serve credflip a pointer its cache's TTL
    old: credflip counts that age, and follows the flip within its own TTL wherever
    the flip falls in its cycle (invoked every half second)."""
    ttl, cache = 60.0, 20.0
    clock = Clock()
    delays = []
    with ExtensionStandIn(moto_endpoint, ttl=cache, clock=clock) as ext:
        for offset in range(0, 70, 5):
            ssm.put(layout.pointer, "blue")
            ext.cache.clear()
            resolver = Resolver(
                store=through(ext, moto_endpoint, clock=clock), ttl=ttl, clock=clock
            )
            until = clock.now + offset
            while clock.now < until:
                assert resolver.resolve(layout.env).color is Color.BLUE
                clock.now += 0.5
            get(ext.port, f"{extension.PATH}?name={layout.pointer}&withDecryption=true")
            clock.now += 0.1
            ssm.put(layout.pointer, "green")
            flipped = clock.now
            while resolver.resolve(layout.env).color is Color.BLUE:
                clock.now += 0.5
            delays.append(clock.now - flipped)
    assert max(delays) <= ttl * 1.1 + 0.5, delays
    # Some flips came right after the extension had cached the old pointer.
    assert max(delays) > ttl - cache, delays


@pytest.mark.parametrize("cache", [0.0, 20.0])
def test_refresh_sees_a_flip_at_once(
    moto_endpoint: str, ssm: SsmStore, layout: Layout, cache: float
) -> None:
    with ExtensionStandIn(moto_endpoint, ttl=cache) as ext:
        store = through(ext, moto_endpoint)
        resolver = Resolver(store=store, ttl=60)
        assert resolver.resolve(layout.env).color is Color.BLUE
        ssm.put(layout.pointer, "green")
        assert resolver.resolve(layout.env).color is Color.BLUE  # cached
        assert resolver.refresh(layout.env).color is Color.GREEN
        # With a cache in the extension, around it; without, through it.
        assert ext.requests == (6 if cache == 0 else 3)


def test_after_a_refused_login_the_old_password_never_comes_back(
    moto_endpoint: str, ssm: SsmStore, layout: Layout
) -> None:
    """Green active; within the extension's TTL a rotation to blue and one back to green
    (a new password). The extension still holds green's old URL; the refresh after
    the refused login reads around it, and so does every read until it expired."""
    ssm.put(layout.pointer, "green")
    clock = Clock()
    with ExtensionStandIn(moto_endpoint, ttl=20, clock=clock) as ext:
        store = through(ext, moto_endpoint, clock=clock)
        resolver = Resolver(store=store, ttl=60, clock=clock)
        old = resolver.resolve(layout.env).writer_url
        clock.now += 1
        new = old.replace(SECRET, "the-new-one")
        ssm.put(layout.pointer, "blue")
        ssm.put(layout.url(Color.GREEN, "writer"), new, secure=True)
        ssm.put(layout.pointer, "green")
        clock.now += 1
        stale, _ = store.get_pointed(layout.pointer, layout.resolver_targets, max_age=60)
        assert stale[layout.url(Color.GREEN, "writer")] == old  # the extension's cache
        assert resolver.refresh(layout.env).writer_url == new
        clock.now += 17  # the old URL is still in the extension's cache
        values, age = store.get_pointed(layout.pointer, layout.resolver_targets, max_age=60)
        assert values[layout.url(Color.GREEN, "writer")] == new and age == 0
        clock.now += 3  # past its TTL: through the extension again
        requests = ext.requests
        values, age = store.get_pointed(layout.pointer, layout.resolver_targets, max_age=60)
        assert values[layout.url(Color.GREEN, "writer")] == new and age == 20
        assert ext.requests == requests + 3


def test_a_refresh_never_shares_a_read_the_extension_answered_from_its_cache(
    moto_endpoint: str, ssm: SsmStore, layout: Layout
) -> None:
    """A resolve's read through the extension is in flight (the extension served it the
    pointer it cached before a flip) when a refused login calls refresh(): the refresh
    waits for that read, then reads SSM itself instead of returning what it got."""
    clock = Clock()
    held, go = threading.Event(), threading.Event()
    go.set()

    class Held(SsmExtensionStore):
        def get_pointed(
            self,
            pointer: str,
            targets: Mapping[str, Sequence[str]],
            *,
            max_age: float | None = None,
        ) -> tuple[dict[str, str], float]:
            got = super().get_pointed(pointer, targets, max_age=max_age)
            if max_age != 0:
                held.set()
                assert go.wait(30)
            return got

    with ExtensionStandIn(moto_endpoint, ttl=20, clock=clock) as ext:
        store = Held(
            region="us-east-1", endpoint_url=moto_endpoint, port=ext.port, cache_ttl=20, clock=clock
        )
        resolver = Resolver(store=store, ttl=60, clock=clock)
        assert resolver.resolve(layout.env).color is Color.BLUE
        clock.now += 47  # past credflip's TTL (at most 66 s, less the extension's 20 s)
        get(ext.port, f"{extension.PATH}?name={layout.pointer}&withDecryption=true")
        ssm.put(layout.pointer, "green")  # the extension still holds blue
        go.clear()
        held.clear()
        seen: dict[str, Color] = {}
        resolving = threading.Thread(
            target=lambda: seen.update(resolve=resolver.resolve(layout.env).color)
        )
        resolving.start()
        assert held.wait(30)
        refreshing = threading.Thread(
            target=lambda: seen.update(refresh=resolver.refresh(layout.env).color)
        )
        refreshing.start()
        deadline = time.monotonic() + 30
        while not waiting_on_the_read([refreshing]):  # a condition, polled
            assert time.monotonic() < deadline, "the refresh never reached the resolver"
            time.sleep(0.001)
        go.set()
        resolving.join(30)
        refreshing.join(30)
    assert seen == {"resolve": Color.BLUE, "refresh": Color.GREEN}


def test_a_cache_ttl_not_below_the_client_ttl_refuses_the_extension_with_one_warning(
    moto_endpoint: str, layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    with ExtensionStandIn(moto_endpoint, ttl=300) as ext:
        resolver = Resolver(store=through(ext, moto_endpoint), ttl=60)
        with caplog.at_level(logging.WARNING, logger="credflip"):
            assert resolver.resolve(layout.env).color is Color.BLUE
            assert resolver.refresh(layout.env).color is Color.BLUE
            Resolver(store=through(ext, moto_endpoint), ttl=60).resolve(layout.env)
        assert ext.requests == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SSM_PARAMETER_STORE_TTL=300s" in warnings[0], warnings


def test_boto3_when_nothing_answers_yet_then_the_extension_once_it_does(
    moto_endpoint: str, layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    """In a function's init phase the extension refuses connections; later it answers."""
    port = free_port()
    store = through(port, moto_endpoint)
    resolver = Resolver(store=store, ttl=60)
    with caplog.at_level(logging.DEBUG, logger="credflip.stores.ssm_extension"):
        assert resolver.resolve(layout.env).color is Color.BLUE
        assert resolver.refresh(layout.env).color is Color.BLUE
        assert store._direct is not None
        with ExtensionStandIn(moto_endpoint, ttl=0, port=port) as ext:
            resolver.refresh(layout.env)
            resolver.refresh(layout.env)
            assert ext.requests == 6
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "gave no value (ConnectionRefusedError)" in said[0]
    assert "reading SSM through the AWS Parameters and Secrets" in said[1]


def test_an_extension_that_never_answers_costs_one_short_timeout(
    moto_endpoint: str, layout: Layout
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = through(silent.getsockname()[1], moto_endpoint)
        began = time.monotonic()
        assert Resolver(store=store, ttl=60).resolve(layout.env).color is Color.BLUE
        took = time.monotonic() - began
    assert store._direct is not None
    assert took < extension.READ_TIMEOUT + 4, took  # not botocore's or the OS's minutes


def test_without_boto3_a_silent_extension_is_a_store_error_and_the_last_value_is_served(
    moto_endpoint: str,
    layout: Layout,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The layer has no boto3: when the extension stops answering, a warm function keeps
    its last value (stale-if-error) and a cold one gets credflip's error, not an ImportError."""
    clock = Clock()
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext:
        port = ext.port
        resolver = Resolver(store=through(ext, moto_endpoint, clock=clock), ttl=60, clock=clock)
        assert resolver.resolve(layout.env).color is Color.BLUE
    for sdk in ("boto3", "botocore", "botocore.exceptions"):
        monkeypatch.setitem(sys.modules, sdk, None)  # importing them raises ImportError
    clock.now += 67  # past the longest jittered TTL
    with caplog.at_level(logging.WARNING, logger="credflip"):
        assert resolver.resolve(layout.env).color is Color.BLUE
    assert "StoreError: cannot create an SSM client: import of botocore" in caplog.text
    with pytest.raises(StoreError, match="cannot create an SSM client: import of botocore"):
        Resolver(store=through(port, moto_endpoint), ttl=60).resolve(layout.env)


@pytest.mark.parametrize("token", [None, "not-this-function"])
def test_a_refused_token_means_boto3_and_one_warning(
    moto_endpoint: str,
    layout: Layout,
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if token is None:
        monkeypatch.delenv("AWS_SESSION_TOKEN")
    else:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext:
        resolver = Resolver(store=through(ext, moto_endpoint), ttl=60)
        with caplog.at_level(logging.WARNING, logger="credflip"):
            assert resolver.resolve(layout.env).color is Color.BLUE
            assert resolver.refresh(layout.env).color is Color.BLUE
    warnings = [r.getMessage() for r in caplog.records]
    status = "401" if token is None else "403"
    assert len(warnings) == 1 and f"(HTTP {status})" in warnings[0], warnings


def test_a_missing_pointer_is_the_same_error_either_way(moto_endpoint: str, ssm: SsmStore) -> None:
    env = f"missing{serial()}"
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext, pytest.raises(NotInitialized) as through_it:
        Resolver(store=through(ext, moto_endpoint)).resolve(env)
    with pytest.raises(NotInitialized) as directly:
        Resolver(store=ssm).resolve(env)
    assert str(through_it.value) == str(directly.value)


def test_passwords_reach_no_log_repr_or_message(
    moto_endpoint: str, layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):  # credflip's, botocore's, urllib3's
        with ExtensionStandIn(moto_endpoint, ttl=20) as ext:
            store = through(ext, moto_endpoint)
            resolver = Resolver(store=store, ttl=60)
            endpoints = resolver.resolve(layout.env)
            resolver.refresh(layout.env)  # around the extension's cache: boto3
            Resolver(store=through(ext, moto_endpoint), ttl=10).resolve(layout.env)  # refused
        Resolver(store=through(free_port(), moto_endpoint)).resolve(layout.env)  # no answer
    assert SECRET in endpoints.writer_url
    shown = [caplog.text, repr(store), repr(endpoints), str(endpoints.to_dict())]
    assert not any(SECRET in text for text in shown)


def test_the_extension_is_tried_in_a_lambda_or_when_asked(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"ssm://us-east-1?endpoint_url={moto_endpoint}"
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.delenv("CREDFLIP_SSM_EXTENSION", raising=False)
    assert type(open_reader(spec)) is SsmStore
    for mode, in_lambda, chosen in [
        ("", True, SsmExtensionStore),
        ("auto", True, SsmExtensionStore),
        ("off", True, SsmStore),
        ("on", False, SsmExtensionStore),
    ]:
        monkeypatch.setenv("CREDFLIP_SSM_EXTENSION", mode)
        if in_lambda:
            monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
        else:
            monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
        reader = open_reader(spec)
        assert type(reader) is chosen, mode
        assert reader.url == "ssm://us-east-1?endpoint_url=" + moto_endpoint
        assert type(open_store(spec)) is SsmStore  # the rotator never reads through it
    SqliteStore(tmp_path / "p.db").close()
    assert type(open_reader(f"sqlite:///{tmp_path}/p.db")) is SqliteStore
    monkeypatch.setenv("CREDFLIP_SSM_EXTENSION", "maybe")
    with pytest.raises(UsageError, match="use on, off or auto"):
        open_reader(spec)


@pytest.mark.parametrize(
    ("environ", "ttl"),
    [
        ({}, 300),
        ({"SSM_PARAMETER_STORE_TTL": "0"}, 0),
        ({"SSM_PARAMETER_STORE_TTL": "45"}, 45),
        ({"SSM_PARAMETER_STORE_TTL": "900"}, 300),
        ({"SSM_PARAMETER_STORE_TTL": "soon"}, 300),
        # Outside the documented whole seconds: the extension may take its default.
        ({"SSM_PARAMETER_STORE_TTL": "-1"}, 300),
        ({"SSM_PARAMETER_STORE_TTL": "5.5"}, 300),
        ({"SSM_PARAMETER_STORE_TTL": "nan"}, 300),
        ({"SSM_PARAMETER_STORE_TTL": " 0"}, 300),
        ({"PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE": "0.0"}, 300),
        ({"PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": "false"}, 0),
        ({"PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": "FALSE"}, 300),
        ({"PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": " false"}, 300),
        ({"PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE": "0"}, 0),
    ],
)
def test_the_extension_cache_ttl_is_read_as_the_extension_reads_it(
    environ: dict[str, str], ttl: float
) -> None:
    assert extension_cache_ttl(environ) == ttl
