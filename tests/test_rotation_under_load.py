"""bench/rotation_under_load.py stops at once, with the error, when its Django site dies."""

from __future__ import annotations

from pathlib import Path

import pytest
from benches import run_bench, shadowing

#: waitress as the Django site imports it, broken two ways. The benchmark itself
#: never imports waitress: only its site process meets these.
BROKEN_WAITRESS = {
    "at import": 'raise ImportError("no waitress in this test")\n',
    "after its port": (
        "class _Server:\n"
        "    effective_port = 9  # nothing listens there\n"
        "\n"
        "    def run(self):\n"
        '        raise RuntimeError("waitress stopped serving in this test")\n'
        "\n"
        "\n"
        "def create_server(*_args, **_kwargs):\n"
        "    return _Server()\n"
    ),
}


@pytest.mark.parametrize("when", list(BROKEN_WAITRESS))
def test_a_django_site_that_dies_fails_the_benchmark_with_its_error(
    when: str, tmp_path: Path
) -> None:
    env = shadowing(tmp_path, "waitress", BROKEN_WAITRESS[when])
    proc, seconds = run_bench("rotation_under_load.py", "--rotations", "1", env=env)
    assert proc.returncode != 0
    assert seconds < 30
    expected = (
        "ImportError: no waitress in this test"
        if when == "at import"
        else "RuntimeError: waitress stopped serving in this test"
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert "Django site" in last and expected in last, proc.stderr[-3000:]
