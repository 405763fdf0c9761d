"""Who holds the lock a MariaDB/MySQL statement of credflip waits for, named as PostgreSQL's
line names it (issue 19 point 1): thread, user, program (performance_schema's
``program_name``, else 'application unknown'), address, state, how long its transaction is
open. On real private MariaDB servers: the workers' own (performance_schema off) and one
with it on. MySQL 8's row-lock view (performance_schema.data_lock_waits) is asked for on a
MariaDB, which lacks it, to show that a source the server does not have names nobody and
fails nothing."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest
from apps import make_my_app
from clusters import MY_HOST, Mariadb
from faults import wait_for
from test_lock_queue import holding

from credflip import commands
from credflip.engines import engine_for
from credflip.engines.locks import LockWait
from credflip.engines.mysql import locks as my_locks
from credflip.errors import LockTimeout
from credflip.layout import Layout
from credflip.stores.sqlite import SqliteStore
from credflip.urls import pymysql_kwargs as my_connect_kwargs


def test_init_behind_a_backup_names_its_program(mariadb_ps: Mariadb, tmp_path: Path) -> None:
    """A backup (``LOCK TABLES`` on the grant tables) named 'nightly-backup' holds init's
    first account statement: init stops with the one line naming that program. Breaks
    when MariaDB's line leaves the program out."""
    app = make_my_app(mariadb_ps, rich=False)
    plugins = mariadb_ps.sql(
        "SELECT 1 FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO'"
    )
    if not plugins:
        mariadb_ps.sql("INSTALL SONAME 'metadata_lock_info'")
    backup = pymysql.connect(host=MY_HOST, port=mariadb_ps.port, user="root", autocommit=True,
                             program_name="nightly-backup")  # fmt: skip
    store = SqliteStore(tmp_path / "params.db")
    lock = ("LOCK TABLES mysql.global_priv READ LOCAL",)
    with (
        holding(backup, lock, "UNLOCK TABLES") as hold,
        engine_for(app.admin_url, statement_timeout=2.0) as eng,
    ):
        eng.lock_wait = LockWait(timeout=1.0, budget=0)  # one try: its own 1.8s
        with pytest.raises(LockTimeout) as info:
            commands.init(store, Layout("env"), admin_url=app.admin_url, writer_url=app.url,
                          engine=eng)  # fmt: skip
    line = str(info.value)
    assert re.search(
        rf"thread {hold.session} of user 'root' \(application 'nightly-backup', from "
        rf"127\.0\.0\.1:\d+, idle\) holds it; end that session's transaction or lock "
        rf"\(KILL {hold.session}\)",
        line,
    ), line
    assert "\n" not in line and app.password not in line
    assert not app.user_exists(app.green) and store.get(Layout("env").state) is None


def admin_run(conn: Any) -> Any:
    """Statements on the admin's own connection, as the engine's watch runs them."""

    def run(query: str, args: Sequence[Any]) -> list[Any]:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    return run


def test_a_row_lock_holder_is_named_and_a_view_the_server_lacks_names_nobody(
    mariadb: Mariadb,
) -> None:
    """A session waits for a row another keeps locked in an open transaction: the holder
    is named, its program unknown (performance_schema off) but its address, 'idle in
    transaction' and its transaction's age said. Asked as on MySQL 8 (data_lock_waits,
    which this server lacks), the answer is nobody, not an error. Breaks when a row lock
    wait ('Updating', not 'Waiting for ...') is not looked into, or a missing view raises."""
    app = make_my_app(mariadb, rich=False)
    app.execute(app.url, "INSERT INTO orders (color) VALUES ('blue')")
    holder, waiter = app.open(app.url), app.open(app.url)
    admin = pymysql.connect(**my_connect_kwargs(app.admin_url), autocommit=True)
    failures: list[BaseException] = []

    def wait_for_row() -> None:
        try:
            with waiter.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 20")
                cur.execute("UPDATE orders SET color = 'green' WHERE id = 1")
        except BaseException as exc:  # reported to the test
            failures.append(exc)

    thread = threading.Thread(target=wait_for_row, daemon=True)
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE orders SET color = 'red' WHERE id = 1")
        thread.start()
        run = admin_run(admin)
        lock_wait = "SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s "
        lock_wait += "AND trx_state = 'LOCK WAIT'"
        # InnoDB refreshes its INNODB_TRX cache only after 0.1 s without a read of it:
        # polled any faster, it would show the transactions of the first poll for good.
        wait_for(lambda: run(lock_wait, [waiter.thread_id()]), timeout=10, interval=0.15,
                 what="a row lock wait")  # fmt: skip
        found = my_locks.blockers(run, waiter.thread_id(), server=admin.get_server_info())
        assert [b.session for b in found] == [f"thread {holder.thread_id()}"]
        assert re.fullmatch(
            rf"thread {holder.thread_id()} of user '{app.user}' \(application unknown, from "
            rf"127\.0\.0\.1:\d+, idle in transaction, transaction open for [\d.]+m?s\)",
            found[0].describe(),
        ), found[0].describe()
        assert found[0].end == f"KILL {holder.thread_id()}"
        assert my_locks.blockers(run, waiter.thread_id(), server="8.0.36") == []
    finally:
        with holder.cursor() as cur:
            cur.execute("ROLLBACK")
        thread.join(30)
        for conn in (holder, waiter, admin):
            conn.close()
    assert failures == [] and not thread.is_alive()
