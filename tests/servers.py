"""Private database servers for tests that need a server of their own.

A private MariaDB (with the options a test needs: performance_schema, userstat,
a replica of another) runs on a random loopback port as the ``mysql`` OS user
and is deleted afterwards. PostgreSQL standbys come from
:meth:`credflip.demo.cluster.EmbeddedPostgres.standby`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

from credflip.demo.binaries import free_port
from credflip.engines.mysql import native_password_hash
from credflip.engines.mysql.driver import connect as my_connect
from credflip.rotation import new_password

MY_ADMIN = "cft_admin"


class PrivateMariadb:
    """``mariadbd`` with its own data directory and port."""

    def __init__(self, *options: str) -> None:
        self.options = options
        self.port = 0
        self.root_dir: Path | None = None
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateMariadb:
        self.root_dir = Path(tempfile.mkdtemp(prefix="credflip-mariadb-"))
        shutil.chown(self.root_dir, user="mysql")
        # A temporary folder of its own: servers installed at the same moment by two
        # test processes otherwise share /tmp, where their bootstrap's temporary
        # tables can collide ("Could not remove temporary table ... Aborting").
        (self.root_dir / "tmp").mkdir()
        shutil.chown(self.root_dir / "tmp", user="mysql")
        installed = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.root_dir / 'data'}",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=False,
            capture_output=True,
            text=True,
            env=self._env(),
        )
        assert installed.returncode == 0, (
            f"mariadb-install-db exited {installed.returncode}: "
            f"{(installed.stderr or installed.stdout)[-1500:]}"
        )
        self.port = free_port()
        return self._launch()

    def _env(self) -> dict[str, str]:
        """The environment of its install and server: TMPDIR inside its own folder."""
        assert self.root_dir is not None
        return {**os.environ, "TMPDIR": str(self.root_dir / "tmp")}

    def _launch(self) -> PrivateMariadb:
        assert self.root_dir is not None
        self.server = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.root_dir / 'data'}",
                "--user=mysql",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.root_dir}/s.sock",
                "--skip-name-resolve",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
        )
        deadline = time.monotonic() + 30
        while True:  # poll until it answers
            try:
                self.root().close()
                return self
            except pymysql.err.OperationalError:
                assert self.server.poll() is None, "mariadbd exited at start"
                assert time.monotonic() < deadline, "mariadbd did not answer within 30s"
                time.sleep(0.05)

    def halt(self) -> None:
        """Shut the server down (as a restart does) and keep its files."""
        assert self.server is not None
        self.server.terminate()
        self.server.wait(30)

    def resume(self) -> PrivateMariadb:
        """Start a halted server again, on the same port and data."""
        return self._launch()

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(30)
            self.server = None
        if self.root_dir is not None:
            shutil.rmtree(self.root_dir, ignore_errors=True)
            self.root_dir = None

    def root(self) -> Any:
        return my_connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)

    def sql(self, *statements: str, args: Any = None) -> list[Any]:
        with self.root() as conn, conn.cursor() as cur:
            rows: list[Any] = []
            for statement in statements:
                cur.execute(statement, args)
                rows = list(cur.fetchall()) if cur.description else []
            return rows

    def add_admin(self, *, performance_schema: bool = False) -> str:
        """Create the tests' non-root admin; return its password."""
        password = new_password()
        self.sql(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
            args=(MY_ADMIN, native_password_hash(password)),
        )
        self.sql(
            f"GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{MY_ADMIN}'@'%'",
            f"GRANT SELECT ON mysql.* TO '{MY_ADMIN}'@'%'",
        )
        if performance_schema:
            self.sql(f"GRANT SELECT ON performance_schema.* TO '{MY_ADMIN}'@'%'")
        return password

    def replicate_from(self, primary: PrivateMariadb) -> None:
        """Become a replica of *primary* (which runs with --log-bin), from its first event."""
        password = new_password()
        primary.sql(
            "CREATE USER 'cft_repl'@'%%' IDENTIFIED BY PASSWORD %s",
            args=(native_password_hash(password),),
        )
        primary.sql("GRANT REPLICATION SLAVE ON *.* TO 'cft_repl'@'%'")
        self.sql(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, "
            "MASTER_USER = 'cft_repl', MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos",
            args=(primary.port, password),
        )
        self.sql("START SLAVE")
        self.catch_up(primary)

    def lag(self, seconds: int) -> None:
        """As a replica, apply each event *seconds* after the primary wrote it (MASTER_DELAY)."""
        self.sql("STOP SLAVE")
        self.sql("CHANGE MASTER TO MASTER_DELAY = %s", args=(seconds,))
        self.sql("START SLAVE")

    def catch_up(self, primary: PrivateMariadb, timeout: float = 30) -> None:
        """Wait until this replica applied everything *primary* has written so far."""
        position = primary.sql("SELECT @@gtid_binlog_pos")[0][0]
        waited = self.sql("SELECT MASTER_GTID_WAIT(%s, %s)", args=(position, timeout))[0][0]
        assert waited == 0, f"replica did not reach {position} within {timeout}s"
