"""The documented Lambda pattern, run against a real server during rotations."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from conftest import App

from credflip import commands
from credflip.demo import Traffic
from credflip.layout import Layout
from credflip.resolver import clear_cache
from credflip.rotation import RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore

EXAMPLE = Path(__file__).parent.parent / "examples" / "lambda_function.py"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
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
                options=RotateOptions(client_ttl=0.3, drain_timeout=20),
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
