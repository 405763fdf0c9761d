"""bench/drain_detection.py: a trial or legacy client thread that dies is never lost."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from benches import load_bench

from credflip.errors import CredflipError
from credflip.urls import DbUrl

drain_detection = load_bench("drain_detection")


class NoApps:
    """A server on which every trial fails at its first step."""

    def app(self, counters: bool = True) -> Any:
        raise RuntimeError("no app database in this test")


def test_a_trial_that_dies_fails_its_row_with_its_error(tmp_path: Path) -> None:
    client = drain_detection.Client("periodic", 1.5)
    cells = [
        drain_detection.Cell("postgresql", client, column) for column in drain_detection.COLUMNS
    ]
    with pytest.raises(CredflipError, match="RuntimeError: no app database in this test"):
        drain_detection.run_cells(NoApps(), cells, 3, tmp_path)


@pytest.mark.parametrize("client", [("periodic", 0.01), ("poisson", 100.0)])
def test_a_legacy_client_that_dies_fails_its_trial(client: tuple[str, float]) -> None:
    url = DbUrl("oracle", "127.0.0.1", "app", "secret", 1521, "app")
    with (
        pytest.raises(CredflipError, match="unsupported database scheme 'oracle'"),
        drain_detection.Legacy(url, drain_detection.Client(*client), random.Random(1)) as legacy,
    ):
        legacy.thread.join(10)


def test_periodic_clients_start_at_a_random_phase_then_keep_their_period() -> None:
    waits = drain_detection.Client("periodic", 3.0).waits(random.Random(7))
    first = waits()
    assert 0 <= first < 3.0
    assert [waits() for _ in range(3)] == [3.0, 3.0, 3.0]


def test_the_options_of_the_two_columns() -> None:
    client = drain_detection.Client("poisson", 0.2)
    base = drain_detection.Cell("mysql", client, "baseline").options
    dflt = drain_detection.Cell("mysql", client, "default").options
    assert (base.client_ttl, base.quiet, base.drain_timeout) == (1.0, 1.0, 75.0)
    assert (dflt.client_ttl, dflt.quiet, dflt.drain_timeout) == (1.0, None, 75.0)
    assert dflt.min_drain == base.min_drain == 0.0 and not dflt.sessions_only
