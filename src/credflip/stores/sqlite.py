"""The embedded default store: one SQLite file, mode 0600, WAL.

Several processes may read and write it at once: every write is its own
``BEGIN IMMEDIATE`` transaction and readers never block writers (WAL). The
file and its ``-wal``/``-shm`` companions are created owner-only because the
URLs inside carry passwords.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import NotInitialized, ParameterExists, StoreAccessDenied, StoreError
from .base import Store

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS params (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    secure INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SqliteStore(Store):
    """Parameters in a local SQLite file."""

    scheme = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, create: bool = True
    ) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            # Read-only commands must not leave a folder and an empty store
            # behind because of a typo in --store.
            raise NotInitialized(
                f"the store file {self.path} does not exist: check --store / CREDFLIP_STORE, "
                f"or run 'credflip init' to create it"
            )
        self._lock = threading.Lock()
        self._conn = self._open(timeout)

    @property
    def url(self) -> str:
        """``sqlite:///`` followed by the file's path."""
        return f"sqlite:///{self.path}"

    def _open(self, timeout: float) -> sqlite3.Connection:
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            # Create the file ourselves so that it is never, even briefly,
            # readable by others; SQLite gives -wal/-shm the same mode. Only
            # when it is new: closing any descriptor of a file drops every
            # POSIX lock this process holds on it, those of SQLite connections
            # already open included. Another process could then delete the
            # WAL and shared-memory files under them, and they would read a
            # stale pointer from then on.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreAccessDenied(
                f"cannot open the store file {self.path} ({_reason(exc)}): make sure its folder "
                f"is writable, or choose another with --store sqlite:///PATH"
            ) from exc
        return conn

    def _get_many(self, names: list[str]) -> dict[str, str]:
        marks = ",".join("?" * len(names))
        with self._lock:
            try:
                rows = self._conn.execute(
                    f"SELECT name, value FROM params WHERE name IN ({marks})", names
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the store {self.path}: {_reason(exc)}") from exc
        return {str(n): str(v) for n, v in rows}

    def _get_path(self, folder: str, *, secure: bool) -> dict[str, str]:
        # Every name that starts with "folder/": "0" is the character after "/".
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT name, value FROM params WHERE name > ? AND name < ? "
                    "AND (secure = 0 OR ?) ORDER BY name",
                    (folder + "/", folder + "0", int(secure)),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the store {self.path}: {_reason(exc)}") from exc
        return {str(n): str(v) for n, v in rows}

    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool) -> None:
        if overwrite:
            stmt = (
                "INSERT INTO params (name, value, secure, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
                "secure = excluded.secure, updated_at = excluded.updated_at"
            )
        else:
            stmt = (
                "INSERT INTO params (name, value, secure, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO NOTHING"
            )
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    cur = self._conn.execute(stmt, (name, value, int(secure), time.time()))
                    created = cur.rowcount == 1
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot write {name} to the store {self.path}: {_reason(exc)}"
                ) from exc
        if not overwrite and not created:
            raise ParameterExists(f"parameter {name} already exists")

    def _delete(self, name: str) -> bool:
        return self._changed(
            "DELETE FROM params WHERE name = ?", (name,), f"cannot delete {name} from"
        )

    def delete_if(self, name: str, value: str) -> bool:
        """Delete *name* only while it still holds *value*: one conditional ``DELETE``."""
        return self._changed(
            "DELETE FROM params WHERE name = ? AND value = ?",
            (name, value),
            f"cannot delete {name} from",
        )

    def replace_if(self, name: str, expected: str, value: str) -> bool:
        """Write *value* only while *name* holds *expected*: one conditional ``UPDATE``."""
        return self._changed(
            "UPDATE params SET value = ?, secure = 0, updated_at = ? WHERE name = ? AND value = ?",
            (value, time.time(), name, expected),
            f"cannot write {name} to",
        )

    def _changed(self, statement: str, args: tuple[object, ...], failed: str) -> bool:
        """Run one change; True when it changed a row. *failed* begins the error line."""
        with self._lock:
            try:
                cur = self._conn.execute(statement, args)
            except sqlite3.Error as exc:
                raise StoreError(f"{failed} the store {self.path}: {_reason(exc)}") from exc
        return cur.rowcount == 1

    def drop_claim(self, name: str, expected: str) -> None:
        """Nothing to drop: :meth:`replace_if` is one statement and claims nothing."""

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc) or type(exc).__name__
    if "locked" in text or "busy" in text:
        text += (
            " (another process kept a write transaction open past the busy timeout); run again "
            "once it is done"
        )
    return text
