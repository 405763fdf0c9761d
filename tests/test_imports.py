"""Imports flow one way: every module imports on its own, and the lower ones never
pull in the ones above them."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: From the record of an env down to the pure drain and the engines' interfaces.
CHAIN = ("credflip.state", "credflip.legacy", "credflip.drain", "credflip.engines.base")


@pytest.mark.parametrize("module", CHAIN)
def test_each_module_imports_first_and_never_pulls_in_a_higher_one(module: str) -> None:
    higher = CHAIN[: CHAIN.index(module)]
    code = (
        f"import sys, {module}\n"
        f"up = [m for m in {higher!r} if m in sys.modules]\n"
        f"assert not up, f'{module} imports {{up}}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
