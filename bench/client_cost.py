"""CPU per client credflip makes, side by side with the way it made them before.

* AWS: a new client per store or call (a session of its own, so that credentials
  and region follow the environment). Before: a new boto3 session each time, which
  parses botocore's service model and endpoint data again. Now: one data loader per
  process shared by the sessions (credflip.aws_clients).
* MySQL: a connection per login (verify's logins, ``client_connect``, the demo's
  traffic). Before: ``pymysql.connect``, which (PyMySQL 1.2) builds a default TLS
  context per connection from the system's CA bundle. Now: that context once per
  process (credflip.engines.mysql.driver), on a private MariaDB.

Process CPU time (``time.process_time``) per client, median of the rounds: what a
Lambda invocation or a busy CLI host pays per client, whatever else runs.

    python bench/client_cost.py [--rounds 5] [--per-round 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pymysql
from private_servers import Mariadb

from credflip.aws_clients import make_client
from credflip.engines.mysql.driver import connect

ENDPOINT = "http://127.0.0.1:9"  # no call is made: only the client is built


def old_aws_client() -> Any:
    """The client as credflip made it before: a boto3 session of its own."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name="us-east-1")
    config = Config(retries={"mode": "standard"}, connect_timeout=5, read_timeout=10)
    return session.client("ssm", endpoint_url=ENDPOINT, config=config)


def new_aws_client() -> Any:
    return make_client("ssm", "us-east-1", ENDPOINT)


def cpu_ms(make: Callable[[], Any], rounds: int, per_round: int) -> float:
    make()  # what is made once per process (imports, the shared data) is not counted
    samples = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(per_round):
            made = make()
            if hasattr(made, "close"):
                made.close()
        samples.append((time.process_time() - began) / per_round * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    rows: list[tuple[str, float, float]] = []
    rows.append(
        (
            "AWS client (ssm)",
            cpu_ms(old_aws_client, args.rounds, args.per_round),
            cpu_ms(new_aws_client, args.rounds, args.per_round),
        )
    )
    mariadb = Mariadb(prefix="cfcost")
    try:
        _admin, app = mariadb.app()
        kwargs = {"host": app.host, "port": app.port, "user": app.user, "password": app.password}

        def old_login() -> Any:
            return pymysql.connect(**kwargs)

        def new_login() -> Any:
            return connect(**kwargs)

        rows.append(
            (
                "MySQL login",
                cpu_ms(old_login, args.rounds, args.per_round),
                cpu_ms(new_login, args.rounds, args.per_round),
            )
        )
    finally:
        mariadb.close()
    print(f"CPU ms per client, median of {args.rounds} rounds of {args.per_round}")
    print(f"{'client':<20} {'before':>8} {'now':>8} {'ratio':>7}")
    for name, before, now in rows:
        print(f"{name:<20} {before:8.1f} {now:8.1f} {before / now:6.1f}x")


if __name__ == "__main__":
    main()
