"""The machine's own database servers are out of the tests' reach.

Every test runs its servers privately, on random ports (servers.py,
clusters.py, bench/private_servers.py). A MariaDB or PostgreSQL that the
machine itself runs (127.0.0.1:3306, 127.0.0.1:5432, their usual Unix
sockets) belongs to no test: one that reads or changes such a server's
global state would collide with whatever else uses it, and fail on a machine
without it.

:func:`install` adds an audit hook that refuses, as that machine would
(``ConnectionRefusedError``), every Python-level connection to those
addresses, and records it in :data:`REACHED` (and in the file that
``CREDFLIP_TEST_REACHED`` names, if set). conftest.py installs it in every
test process; :func:`guarded_env` hands it to a process a test starts (and to
that process's children) through a ``sitecustomize`` module.
Python-level connections are PyMySQL's, aiomysql's, asyncpg's and the HTTP
clients'; libpq (psycopg) connects from C, which no audit hook sees.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SHARED_PORTS = frozenset({3306, 5432})
SHARED_SOCKETS = (
    "/run/mysqld/",
    "/var/run/mysqld/",
    "/run/postgresql/",
    "/var/run/postgresql/",
    "/tmp/.s.PGSQL.5432",  # noqa: S108 - a default socket path, only compared with
    "/tmp/mysql.sock",  # noqa: S108
)
LOOPBACK = frozenset({"localhost", "::1", "0.0.0.0", "::"})  # noqa: S104 - connect() targets

#: The environment variable naming a file each refusal is also written to.
LOG = "CREDFLIP_TEST_REACHED"

#: Every refused address, in order (for this process).
REACHED: list[str] = []
_installed: list[bool] = []


def shared(address: Any) -> str | None:
    """*address* (a ``socket.connect`` argument) as ``host:port`` when it is a shared
    server's, else None."""
    if isinstance(address, str | bytes):
        path = os.fsdecode(address)
        return path if path.startswith(SHARED_SOCKETS) else None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        if port in SHARED_PORTS and (host in LOOPBACK or host.startswith("127.")):
            return f"{host}:{port}"
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    where = shared(args[1])
    if where is not None:
        REACHED.append(where)
        log = os.environ.get(LOG)
        if log:
            with open(log, "a") as out:
                out.write(f"{where} (pid {os.getpid()})\n")
        raise ConnectionRefusedError(f"{where} is a server of the machine, not of a test")


def install() -> None:
    """Refuse connections to the shared servers in this process, from now on."""
    if not _installed:
        sys.addaudithook(_hook)
        _installed.append(True)


def guarded_env(folder: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """*env* (default: this process's) for a process that cannot reach the shared servers
    either, nor can the Python processes it starts: they import a ``sitecustomize`` in
    *folder* that installs the hook. Refusals are written to ``folder / "reached"``."""
    folder.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve()
    (folder / "sitecustomize.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('_shared_servers', {str(here)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.install()\n"
    )
    base = dict(os.environ if env is None else env)
    paths = [str(folder), *filter(None, [base.get("PYTHONPATH")])]
    return {**base, "PYTHONPATH": os.pathsep.join(paths), LOG: str(folder / "reached")}
