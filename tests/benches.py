"""Running a benchmark as a process (out of reach of the machine's own servers), with a
module it imports replaced by a broken one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from shared_servers import guarded_env

BENCH = Path(__file__).parent.parent / "bench"


def shadowing(folder: Path, package: str, code: str) -> dict[str, str]:
    """An environment whose ``import package`` runs *code* instead of the real package.

    Only processes that import *package* meet it: the tests give a benchmark's
    child a package that its parent never imports. Like :func:`guarded_env`'s, its
    processes cannot reach the machine's own servers.
    """
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text(code)
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return guarded_env(folder / "guard", {**os.environ, "PYTHONPATH": os.pathsep.join(paths)})


def run_bench(
    script: str, *args: str, env: dict[str, str], timeout: float = 90
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python bench/<script> args``; its outcome and how many seconds it took."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return proc, time.monotonic() - began


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` as a module (its ``main`` does not run).

    The benchmarks import each other (``children``, ``drain_detection``) from
    their folder, which is added to the end of ``sys.path``.
    """
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
