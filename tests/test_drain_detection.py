"""bench/drain_detection.py: a trial or legacy client thread that dies is never lost."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from benches import load_bench

from credflip.errors import CredflipError
from credflip.urls import DbUrl

drain_detection = load_bench("drain_detection")


class NoApps:
    """A server on which every trial fails at its first step."""

    def app(self, counters: bool) -> Any:
        raise RuntimeError("no app database in this test")

    def signals(self, counters: bool) -> Any:
        return contextlib.nullcontext()


def test_a_trial_that_dies_fails_its_cell_with_its_error(tmp_path: Path) -> None:
    cell = drain_detection.Cell("postgresql", 5.0, counters=False)
    with pytest.raises(CredflipError, match="RuntimeError: no app database in this test"):
        drain_detection.run_cell(NoApps(), cell, 3, tmp_path)


def test_a_legacy_client_that_dies_fails_its_trial() -> None:
    url = DbUrl("oracle", "127.0.0.1", "app", "secret", 1521, "app")
    with (
        pytest.raises(CredflipError, match="unsupported database scheme 'oracle'"),
        drain_detection.Legacy(url, 0.01) as legacy,
    ):
        legacy.thread.join(10)
