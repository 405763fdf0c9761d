"""bench/rotation_under_load.py stops at once, with the error, when its Django site dies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benches import load_bench, run_bench, shadowing

from credflip.demo import WorkerCrashed

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


def test_an_async_app_whose_event_loop_dies_fails_its_checks() -> None:
    """The async client's loop runs in a Worker: the thread dying fails the next check
    (every drain sample), not the end of the benchmark."""
    bench = load_bench("load_clients")
    app = bench.AsyncApp(lambda: None)
    try:
        # SystemExit leaves run_forever (other errors in callbacks are only logged).
        app.loop.call_soon_threadsafe(sys.exit, 3)
        app.thread.join(10)
        assert not app.thread.is_alive()
        traffic = bench.AsyncTraffic(app, workers=1, pause=0.01)
        with pytest.raises(WorkerCrashed, match="the async app's event loop crashed"):
            traffic.check()
        # Said once; after that, that it stopped.
        with pytest.raises(bench.ChildDied, match="stopped before the app was closed"):
            traffic.check()
    finally:
        app.loop.close()


def test_a_server_that_closes_its_output_but_runs_on_fails_within_seconds() -> None:
    """bench/children.Server waits a bounded time for a child whose output closed."""
    children = load_bench("children")
    hang = "import os, time; os.close(1); time.sleep(120)"
    server = children.Server([sys.executable, "-c", hang], what="the hanging site", env={})
    try:
        with pytest.raises(children.ChildDied, match="closed its output before it served"):
            server.first_line(timeout=60)
        assert server.proc.wait(10) != 0  # it was killed, not left running
    finally:
        server.stop()
