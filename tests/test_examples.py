"""The examples, run against real servers during rotations: the Lambda pattern and
the FastAPI app (the Django settings run in test_django's project)."""

from __future__ import annotations

import importlib.util
import socket
import threading
from pathlib import Path
from types import ModuleType

import pytest
from apps import App, make_app
from clusters import Clusters
from faults import wait_for
from following import HttpLoad, Rotations, SessionMonitor, initialised

from credflip import commands
from credflip.demo import Traffic
from credflip.layout import Layout
from credflip.resolver import clear_cache
from credflip.rotation import RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore

EXAMPLES = Path(__file__).parent.parent / "examples"


def load_example(name: str, file: str = "lambda_function.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lambda_example_follows_rotations(
    app: App, store: SqliteStore, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    monkeypatch.setenv("CREDFLIP_STORE", store.url)
    monkeypatch.setenv("CREDFLIP_TTL", "0.3")
    monkeypatch.setenv("DB_ENV", layout.env)
    clear_cache()
    # Two "execution environments", each its own module instance and connection.
    lambdas = [load_example(f"lambda_env_{n}") for n in range(2)]
    colors: list[str] = []

    def invoke(worker: int) -> str:
        result = lambdas[worker % 2].handler({"worker": worker}, None)
        colors.append(result["color"])
        return str(result["color"])

    traffic = Traffic(invoke, workers=2, pause=0.01)
    traffic.start()
    try:
        for _ in range(2):
            result = rotate(
                store,
                layout,
                admin_url=app.admin_url,
                options=RotateOptions(client_ttl=0.3, quiet=0.3, drain_timeout=20),
            )
            assert result.finished
    finally:
        traffic.stop()
        for module in lambdas:
            if module._conn is not None:
                module._conn.close()
        clear_cache()
    assert traffic.failed == 0, dict(traffic.errors)
    assert colors[0] == "blue" and colors[-1] == "blue" and "green" in colors


def test_fastapi_example_follows_rotations(
    clusters: Clusters, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    app = make_app(clusters.get(15), rich=False)
    store, layout = initialised(app, tmp_path, "api")
    for name, value in {
        "CREDFLIP_STORE": store.url,
        "CREDFLIP_PREFIX": layout.prefix,
        "CREDFLIP_TTL": "1",
        "DB_ENV": layout.env,
    }.items():
        monkeypatch.setenv(name, value)
    clear_cache()
    module = load_example("fastapi_example", "fastapi_app.py")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(module.app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        rotations = Rotations(app, store, layout, ttl=1.0)
        with SessionMonitor(app) as monitor:
            with HttpLoad(sock.getsockname()[1]) as load:
                rotations.run(2)
                rotations.wait_past_last_switch(monitor)
            assert not load.failed, load.failed[:3]
            assert set(load.users) == {app.user, app.green}, load.users
            rotations.assert_left_in_time(monitor)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        clear_cache()
