"""The SSM store with real boto3 against moto's server mode."""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from apps import App
from botocore.awsrequest import AWSResponse
from helpers import connects, count_calls
from moto_iam import iam_user

from credflip import commands
from credflip.errors import (
    ConfigurationError,
    LockHeld,
    ParameterExists,
    StoreAccessDenied,
    StoreThrottled,
    UsageError,
)
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import Event, PhaseFinished, PhaseStarted, RotateOptions, rotate
from credflip.state import Phase, hold_lock, load_state
from credflip.stores import open_store
from credflip.stores.ssm import SsmStore


@pytest.fixture
def ssm(moto_endpoint: str) -> Iterator[SsmStore]:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield store
    store.close()


class _Raw(io.BytesIO):
    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self.getvalue()


def inject_error(
    store: SsmStore,
    operation: str,
    code: str,
    *,
    times: int | None = None,
    status: int = 400,
    when: Callable[[Any], bool] = lambda _request: True,
) -> dict[str, int]:
    """Make the endpoint answer *operation* with error *code* (``times`` times, or always).

    Registered on ``before-send``, so botocore's retry logic sees a real HTTP
    error response, exactly as from AWS.
    """
    state = {"left": -1 if times is None else times, "sent": 0}

    def handler(request: Any, **_kwargs: Any) -> AWSResponse | None:
        target = request.headers["X-Amz-Target"].decode()
        if not target.endswith("." + operation) or not when(request) or state["left"] == 0:
            return None
        state["left"] -= 1
        state["sent"] += 1
        body = json.dumps({"__type": code, "message": "Rate exceeded"}).encode()
        return AWSResponse(
            request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body)
        )

    store.client.meta.events.register_first(f"before-send.ssm.{operation}", handler)
    return state


def test_one_get_parameters_call_and_missing_names(ssm: SsmStore) -> None:
    layout = Layout("onecall")
    ssm.put(layout.pointer, "blue")
    ssm.put(layout.url(Color.BLUE, "writer"), "postgresql://a:b@h/d", secure=True)
    calls = count_calls(ssm)
    values = ssm.get_many(layout.resolver_names)
    assert calls == ["GetParameters"]
    assert values == {
        layout.pointer: "blue",
        layout.url(Color.BLUE, "writer"): "postgresql://a:b@h/d",
    }
    many = [f"/db/onecall/p{i}" for i in range(23)]
    calls.clear()
    assert ssm.get_many(many) == {}
    assert calls == ["GetParameters"] * 3  # at most 10 names per call


def test_types_tier_and_kms_key(moto_endpoint: str) -> None:
    store = open_store(f"ssm://us-east-1?endpoint_url={moto_endpoint}&kms_key_id=alias/credflip")
    assert isinstance(store, SsmStore) and store.kms_key_id == "alias/credflip"
    store.put("/db/types/blue/writer-db-url", "postgresql://a:b@h/d", secure=True)
    store.put("/db/types/blue-green-env", "blue")
    described = {
        p["Name"]: p
        for p in store.client.describe_parameters(
            ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": ["/db/types"]}]
        )["Parameters"]
    }
    url = described["/db/types/blue/writer-db-url"]
    assert url["Type"] == "SecureString" and url["KeyId"] == "alias/credflip"
    assert url["Tier"] == "Standard"
    assert described["/db/types/blue-green-env"]["Type"] == "String"
    assert store.url.startswith("ssm://us-east-1?endpoint_url=")


def test_create_only_and_size_limit(ssm: SsmStore) -> None:
    ssm.put("/db/co/rotation-lock", "a", overwrite=False)
    with pytest.raises(ParameterExists):
        ssm.put("/db/co/rotation-lock", "b", overwrite=False)
    assert ssm.get("/db/co/rotation-lock") == "a"
    calls = count_calls(ssm)
    with pytest.raises(UsageError, match="4096-byte limit"):
        ssm.put("/db/co/big", "x" * 4097)
    assert calls == []  # refused before any call
    assert ssm.delete("/db/co/rotation-lock") and not ssm.delete("/db/co/rotation-lock")


def test_throttling_is_retried_then_typed(ssm: SsmStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ssm.put("/db/thr/blue-green-env", "blue")
    calls = count_calls(ssm)
    inject_error(ssm, "GetParameters", "ThrottlingException", times=2)
    assert ssm.get("/db/thr/blue-green-env") == "blue"
    assert calls == ["GetParameters"] * 3  # standard mode: 3 attempts
    calls.clear()
    inject_error(ssm, "GetParameters", "ThrottlingException")
    with pytest.raises(StoreThrottled, match="SSM throttled ssm:GetParameters on /db/thr/"):
        ssm.get("/db/thr/blue-green-env")
    assert len(calls) == 3
    # An operator's AWS_MAX_ATTEMPTS is respected.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    other = SsmStore(region="us-east-1", endpoint_url=ssm.client.meta.endpoint_url)
    other_calls = count_calls(other)
    inject_error(other, "GetParameters", "ThrottlingException")
    with pytest.raises(StoreThrottled):
        other.get("/db/thr/blue-green-env")
    assert len(other_calls) == 5


def test_resolver_rides_out_throttling(ssm: SsmStore) -> None:
    layout = Layout("ride")
    ssm.put(layout.pointer, "green")
    for role in ("writer", "reader"):
        ssm.put(layout.url(Color.GREEN, role), "postgresql://g:pw@h/d", secure=True)  # type: ignore[arg-type]
    resolver = Resolver(store=ssm, ttl=0)
    first = resolver.resolve(layout.env)
    inject_error(ssm, "GetParameters", "ThrottlingException")
    for _ in range(3):
        assert resolver.resolve(layout.env) is first  # stale, but working


def test_kms_errors_name_the_key(moto_endpoint: str) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint, kms_key_id="alias/gone")
    inject_error(store, "PutParameter", "KMSNotFoundException", status=400)
    with pytest.raises(StoreAccessDenied, match=r"check that key alias/gone exists"):
        store.put("/db/kms/blue/writer-db-url", "postgresql://a:b@h/d", secure=True)


def test_no_credentials_and_no_region(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    with pytest.raises(StoreAccessDenied, match="no AWS credentials found"):
        store.get("/db/x/blue-green-env")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(ConfigurationError, match="no AWS region set"):
        open_store("ssm://")
    # As the error says: AWS_REGION is enough (botocore alone would not read it).
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    store = open_store("ssm://")
    assert isinstance(store, SsmStore) and store.client.meta.region_name == "eu-west-1"


def _take_lock(endpoint: str, env: str, start: Any, results: Any) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=endpoint)
    start.wait()
    try:
        with hold_lock(store, Layout(env), purpose="race"):
            results.put(True)
            start.wait()  # keep holding it until everyone tried
    except LockHeld:
        results.put(False)
        start.wait()


def test_lock_race_across_processes(moto_endpoint: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(6), ctx.Queue()
    procs = [
        ctx.Process(target=_take_lock, args=(moto_endpoint, "race", start, results))
        for _ in range(5)
    ]
    for p in procs:
        p.start()
    start.wait()  # everyone tries at once
    outcome = [results.get(timeout=60) for _ in procs]
    start.wait()  # let the winner release
    for p in procs:
        p.join(60)
    assert sorted(outcome) == [False, False, False, False, True]


def three_call_reader(endpoint: str, env: str) -> tuple[str, str, str]:
    """Exactly what existing code does: three plain get_parameter calls."""
    client = boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1")
    color = client.get_parameter(Name=f"/db/{env}/blue-green-env")["Parameter"]["Value"]
    writer = client.get_parameter(Name=f"/db/{env}/{color}/writer-db-url", WithDecryption=True)
    reader = client.get_parameter(Name=f"/db/{env}/{color}/reader-db-url", WithDecryption=True)
    return color, writer["Parameter"]["Value"], reader["Parameter"]["Value"]


def test_existing_three_call_readers_work_after_every_phase(
    app: App, ssm: SsmStore, layout: Layout, moto_endpoint: str
) -> None:
    commands.init(ssm, layout, admin_url=app.admin_url, writer_url=app.url)
    endpoint = moto_endpoint
    seen: list[tuple[str, str]] = []

    def check(event: Event) -> None:
        if isinstance(event, PhaseStarted | PhaseFinished):
            color, writer, reader = three_call_reader(endpoint, layout.env)
            assert connects(writer) and connects(reader), (event, color)
            seen.append((f"{type(event).__name__}:{event.phase}", color))

    color, writer, reader = three_call_reader(endpoint, layout.env)
    assert color == "blue" and connects(writer) and connects(reader)
    for _ in range(2):
        result = rotate(
            ssm,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.1, quiet=0.1),
            on_event=check,
        )
        assert result.finished
    # Start and end of six phases, twice: the readers see the old color until the
    # switch has finished, the new one from then on.
    phases = [f"{kind}:{phase}" for phase in Phase for kind in ("PhaseStarted", "PhaseFinished")]
    flips = [(5, "blue", "green"), (5, "green", "blue")]
    expected = [(e, old if i < at else new) for at, old, new in flips for i, e in enumerate(phases)]
    assert seen == expected


def store_as(endpoint: str, creds: dict[str, str]) -> SsmStore:
    client = boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1", **creds)
    return SsmStore(client=client)


def test_iam_policies_from_the_docs(app: App, moto_with_iam: str) -> None:
    env = f"iam{app.user}"
    rotator = store_as(
        moto_with_iam, iam_user(moto_with_iam, f"rot{app.user}", "rotator-policy.json")
    )
    reader = store_as(
        moto_with_iam, iam_user(moto_with_iam, f"app{app.user}", "application-policy.json")
    )
    layout = Layout(env)
    # The rotator runs a whole init and rotation with its policy alone.
    commands.init(rotator, layout, admin_url=app.admin_url, writer_url=app.url)
    result = rotate(
        rotator, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
    )
    assert result.finished
    # The application resolves, in one call, and may not write or delete.
    assert Resolver(store=reader, ttl=0).resolve(env).color is Color.GREEN
    with pytest.raises(
        StoreAccessDenied, match=r"allow ssm:PutParameter on arn:aws:ssm:us-east-1:\*:parameter/db/"
    ):
        reader.put(layout.pointer, "blue")
    with pytest.raises(StoreAccessDenied, match="allow ssm:DeleteParameter"):
        reader.delete(layout.lock)
    # With the application's policy a rotation fails clearly and changes nothing.
    with pytest.raises(StoreAccessDenied, match="allow ssm:PutParameter"):
        rotate(
            reader,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.1, quiet=0.1),
        )
    assert Resolver(store=reader, ttl=0).resolve(env).color is Color.GREEN
    # On-call's read-only policy: every env under the prefix, the history; no write.
    watcher = store_as(
        moto_with_iam, iam_user(moto_with_iam, f"ops{app.user}", "status-policy.json")
    )
    rows = {r.env: r for r in commands.status_all(watcher).envs}  # this module's envs
    assert (rows[env].phase, rows[env].healthy) == ("idle", True)
    assert [h.result for h in commands.history(watcher, layout)] == ["done"]
    with pytest.raises(StoreAccessDenied, match="allow ssm:PutParameter"):
        watcher.put(layout.pointer, "blue")


def test_throttling_during_a_rotation(app: App, ssm: SsmStore, layout: Layout) -> None:
    commands.init(ssm, layout, admin_url=app.admin_url, writer_url=app.url)
    pointer_write = lambda request: layout.pointer.encode() in request.body  # noqa: E731
    # Brief throttling is absorbed by botocore's retries.
    brief = inject_error(ssm, "PutParameter", "ThrottlingException", times=2, when=pointer_write)
    assert rotate(
        ssm, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
    ).finished
    assert brief["sent"] == 2
    # Persistent throttling stops the rotation before the switch, resumable;
    # clients keep resolving the old color, which still works.
    resolver = Resolver(store=ssm, ttl=0)
    assert resolver.resolve(layout.env).color is Color.GREEN
    stuck = inject_error(ssm, "PutParameter", "ThrottlingException", when=pointer_write)
    with pytest.raises(StoreThrottled):
        rotate(
            ssm, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
        )
    state = load_state(ssm, layout)
    assert state.current is not None and state.current.phase.value == "switch"
    assert ssm.get(layout.lock) is None
    endpoints = resolver.resolve(layout.env)
    assert endpoints.color is Color.GREEN and connects(endpoints.writer_url)
    stuck["left"] = 0  # AWS calms down
    result = rotate(
        ssm, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
    )
    assert result.finished and result.resumed
    assert resolver.resolve(layout.env).color is Color.BLUE
