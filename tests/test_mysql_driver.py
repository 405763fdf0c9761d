"""credflip's PyMySQL connections make PyMySQL's default ("preferred") TLS context once
per process instead of once per connection (engines/mysql/driver.py)."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import pymysql
from benches import run_bench
from clusters import MY_HOST, Mariadb
from servers import MY_ADMIN
from shared_servers import guarded_env

from credflip.engines.mysql.driver import connect


def _admin(mariadb: Mariadb, **extra: object) -> dict[str, object]:
    return {
        "host": MY_HOST,
        "port": mariadb.port,
        "user": MY_ADMIN,
        "password": mariadb.admin_password,
        **extra,
    }


def test_connections_without_tls_options_share_pymysqls_own_default_context(
    mariadb: Mariadb,
) -> None:
    made: list[pymysql.connections.Connection] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            conn = connect(**_admin(mariadb))
        except BaseException as exc:
            errors.append(exc)
            raise
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0].startswith(f"{MY_ADMIN}@")
        made.append(conn)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(made) == 4, errors
    assert len({id(conn.ctx) for conn in made}) == 1
    # The context is the one PyMySQL makes for "preferred" TLS: offered, not verified.
    plain = pymysql.connect(**_admin(mariadb), defer_connect=True)
    for ctx in (made[0].ctx, plain.ctx):
        assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_NONE, False)
    assert made[0].ssl and not made[0]._ssl_required  # preferred, as PyMySQL has it
    for conn in made:
        conn.close()


def test_tls_options_still_get_a_context_of_their_own(mariadb: Mariadb) -> None:
    shared = connect(**_admin(mariadb))
    asked = connect(**_admin(mariadb, ssl_verify_cert=True, defer_connect=True))
    assert asked.ctx is not shared.ctx
    assert asked._ssl_required and asked.ctx.verify_mode == ssl.CERT_REQUIRED
    off = connect(**_admin(mariadb, ssl_disabled=True))
    assert not off.ssl
    shared.close()
    off.close()


def test_a_connect_costs_a_fraction_of_pymysqls_cpu(mariadb: Mariadb) -> None:
    """This thread's CPU time, not wall time: what the change saves is CPU (about 40 ms
    per connect with PyMySQL 1.2's context per connection, about 2 ms here)."""

    def cpu(opener: object, n: int = 20) -> float:
        began = time.thread_time()
        for _ in range(n):
            opener(**_admin(mariadb)).close()  # type: ignore[operator]
        return time.thread_time() - began

    connect(**_admin(mariadb)).close()  # the one context, made outside the measure
    assert cpu(connect) * 3 < cpu(pymysql.connect)


def test_the_client_cost_bench_prints_both_clients_before_and_now(tmp_path: Path) -> None:
    """bench/client_cost.py runs (briefly) and prints its table: each client cheaper now."""
    proc, _seconds = run_bench(
        "client_cost.py", "--rounds", "1", "--per-round", "3", env=guarded_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line[:20].strip(): line.split() for line in proc.stdout.splitlines()[2:]}
    assert set(rows) == {"AWS client (ssm)", "MySQL login"}, proc.stdout
    for name, cells in rows.items():
        assert float(cells[-1].rstrip("x")) > 1, (name, proc.stdout)
