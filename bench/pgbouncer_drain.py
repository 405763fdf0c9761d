"""How long a drain takes through PgBouncer, in each pooling mode.

Per mode: a private PostgreSQL and a private PgBouncer in front of it
(tests/poolers.py: ``auth_query`` through a ``SECURITY DEFINER`` function,
PgBouncer's defaults otherwise, so ``server_idle_timeout`` is 600 s), an app
whose colors' URLs go through PgBouncer, and clients that follow the pointer
(resolver TTL 1 s: three keep a connection, two open one per request). Each
rotation runs with ``--client-ttl 1s --quiet 10s``; the script prints each
drain's seconds and the failed requests. The shortest drain those options
allow is the cache wait (1.1 s) plus the quiet window: 11.1 s.

``--without-pooler`` does not register PgBouncer with the env (``init`` without
``--pooler``): credflip then takes PgBouncer's server connections of the old
user for its sessions, as it did before it knew PgBouncer (run it against an
older checkout with ``PYTHONPATH=/that/checkout/src``).

    python bench/pgbouncer_drain.py [--modes transaction,session] [--rotations 3]
        [--without-pooler] [--drain-timeout 20m]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from apps import make_app
from clusters import start_cluster
from poolers import Followers, PrivatePgbouncer

from credflip import commands
from credflip.durations import parse_duration
from credflip.layout import Layout
from credflip.rotation import RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore

TTL = 1.0
QUIET = 10 * TTL


def one_mode(mode: str, rotations: int, *, pooler: bool, drain_timeout: float) -> list[float]:
    """The drain seconds of *rotations* rotations through PgBouncer in pool *mode*."""
    cluster = start_cluster()
    try:
        app = make_app(cluster)
        with PrivatePgbouncer(cluster, mode) as pgb, tempfile.TemporaryDirectory() as tmp:
            pgb.serve(app.database)
            store, layout = SqliteStore(Path(tmp) / "params.db"), Layout(f"pgb{mode}")
            extra = {"pooler_url": pgb.console_url()} if pooler else {}
            url = pgb.url(app.user, app.password, app.database)
            commands.init(store, layout, admin_url=app.admin_url, writer_url=url, **extra)
            drains = []
            with Followers(store, layout, TTL) as clients:
                for n in range(rotations):
                    started = time.monotonic()
                    result = rotate(
                        store,
                        layout,
                        admin_url=app.admin_url,
                        options=RotateOptions(
                            client_ttl=TTL, quiet=QUIET, drain_timeout=drain_timeout
                        ),
                    )
                    drains.append(result.drain_seconds or 0.0)
                    print(
                        f"{mode}: rotation {n + 1}: drain {result.drain_seconds:.1f}s "
                        f"(rotation {time.monotonic() - started:.1f}s)",
                        flush=True,
                    )
            print(f"{mode}: {clients.ok} requests, {len(clients.failed)} failed", flush=True)
            for line in clients.failed[:5]:
                print(f"  {line}")
            store.close()
            return drains
    finally:
        cluster.pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="transaction,session")
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--without-pooler", action="store_true")
    parser.add_argument("--drain-timeout", default="20m")
    args = parser.parse_args()
    timeout = parse_duration(args.drain_timeout, what="--drain-timeout")
    rows = []
    for mode in args.modes.split(","):
        drains = one_mode(
            mode, args.rotations, pooler=not args.without_pooler, drain_timeout=timeout
        )
        rows.append((mode, drains))
    what = "not registered" if args.without_pooler else "registered (init --pooler)"
    print(f"\nPgBouncer {what}; --client-ttl 1s, quiet window {QUIET:g}s")
    for mode, drains in rows:
        print(f"  {mode:<12} drains: {', '.join(f'{d:.1f}s' for d in drains)}")


if __name__ == "__main__":
    main()
