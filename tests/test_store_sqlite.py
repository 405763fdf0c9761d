"""The embedded SQLite store."""

from __future__ import annotations

import multiprocessing
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from credflip.errors import NotInitialized, ParameterExists, StoreAccessDenied, UsageError
from credflip.stores import DEFAULT_STORE, open_store, store_spec
from credflip.stores.sqlite import SqliteStore


def test_file_is_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "params.db"
    store = SqliteStore(path)
    store.put("/db/x/a", "1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    wal = Path(f"{path}-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


def test_read_many_in_one_statement(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    for i in range(5):
        store.put(f"/db/x/{i}", str(i), secure=i % 2 == 0)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    values = store.get_many([f"/db/x/{i}" for i in range(7)])
    assert values == {f"/db/x/{i}": str(i) for i in range(5)}
    assert len(statements) == 1 and statements[0].startswith("SELECT")


def test_create_only_and_delete(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    store.put("/db/x/lock", "mine", overwrite=False)
    with pytest.raises(ParameterExists):
        store.put("/db/x/lock", "theirs", overwrite=False)
    assert store.get("/db/x/lock") == "mine"
    store.put("/db/x/lock", "overwritten")
    assert store.get("/db/x/lock") == "overwritten"
    assert store.delete("/db/x/lock") is True
    assert store.delete("/db/x/lock") is False
    assert store.get("/db/x/lock") is None


def test_values_over_4kb_are_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    with pytest.raises(UsageError, match="over the 4096-byte limit"):
        store.put("/db/x/big", "x" * 4097)
    assert store.get("/db/x/big") is None
    store.put("/db/x/ok", "x" * 4096)


def test_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreAccessDenied, match="cannot open the store file"):
        SqliteStore(blocker / "sub" / "p.db")


def _race(path: str, n: int, start: object, results: object) -> None:
    store = SqliteStore(path)
    start.wait()  # type: ignore[attr-defined]
    try:
        store.put("/db/x/rotation-lock", f"proc-{n}", overwrite=False)
        won = True
    except ParameterExists:
        won = False
    for i in range(40):
        store.put(f"/db/x/p{n}/{i}", str(i))
    results.put((n, won))  # type: ignore[attr-defined]


def test_several_processes_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, n, start, results)) for n in range(6)]
    for p in procs:
        p.start()
    start.set()
    outcome = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(won for _, won in outcome) == 1
    store = SqliteStore(path)
    winner = next(n for n, won in outcome if won)
    assert store.get("/db/x/rotation-lock") == f"proc-{winner}"
    names = [f"/db/x/p{n}/{i}" for n in range(6) for i in range(40)]
    assert len(store.get_many(names)) == 240


def test_open_store_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDFLIP_STORE", raising=False)
    assert store_spec() == DEFAULT_STORE == "sqlite:///.credflip/params.db"
    monkeypatch.chdir(tmp_path)
    # Only a command that creates (init) makes the file; a read creates nothing.
    with pytest.raises(NotInitialized, match="does not exist"):
        open_store()
    assert not (tmp_path / ".credflip").exists()
    with open_store(create=True) as store:
        store.put("/db/a/b", "c")
    assert (tmp_path / ".credflip" / "params.db").exists()
    with open_store() as store:
        assert store.get("/db/a/b") == "c"
    monkeypatch.setenv("CREDFLIP_STORE", f"sqlite:///{tmp_path}/env.db")
    with open_store(create=True) as store:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "env.db"
    for bad, message in [
        ("sqlite://rel.db", "write sqlite:///"),
        ("nope", "invalid store"),
        ("ssm://?region=x", "invalid store option"),
    ]:
        with pytest.raises(UsageError, match=message):
            open_store(bad)
    # A store given explicitly wins over the variable.
    with open_store(f"sqlite:///{tmp_path}/given.db", create=True) as store:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "given.db"


def test_a_second_store_on_the_same_file_does_not_blind_the_first(tmp_path: Path) -> None:
    """Found by the fault tests: opening a second store closed a descriptor of the file,
    which drops the POSIX locks of the first one's connection; another process exiting then
    removed the WAL and shared memory under it, and it kept reading a stale pointer."""
    path = tmp_path / "params.db"
    first = SqliteStore(path)
    first.put("/db/x/blue-green-env", "blue")
    assert first.get("/db/x/blue-green-env") == "blue"
    SqliteStore(path).close()  # a resolver opening its own handle, in the same process
    for color in ("green", "blue", "green"):
        subprocess.run(
            [sys.executable, "-c", WRITER, str(path), color],
            check=True,
            timeout=60,
        )
        assert first.get("/db/x/blue-green-env") == color
    first.close()


WRITER = """
import sys
from credflip.stores.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
store.put("/db/x/blue-green-env", sys.argv[2])
store.close()
"""
