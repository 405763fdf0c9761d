"""Resolving from SSM: credflip vs the original three-call reader, on moto's server.

Side by side in one run, against moto's server mode on loopback (real boto3,
real HTTP; API calls counted with a botocore event hook):

* API calls per cold resolve;
* wall time per cold resolve, client creation included (a Lambda cold start);
* SSM calls per minute for a fleet of N clients that each serve traffic
  continuously with a 60 s TTL, and the largest fleet that fits SSM's default
  40 TPS (2,400 calls a minute) for GetParameter/GetParameters together.

    python bench/resolve_ssm.py [--clients 100] [--minutes 10] [--cold 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.stores.ssm import SsmStore

ENV = "prod"
QUOTA_PER_MINUTE = 40 * 60


def counter(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-send.ssm.*",
        lambda request, **_: calls.append(request.headers["X-Amz-Target"].decode()),
    )
    return calls


def three_call_reader(client: Any) -> tuple[str, str, str]:
    """The original design: pointer, then the active color's two URLs."""
    color = client.get_parameter(Name=f"/db/{ENV}/blue-green-env")["Parameter"]["Value"]
    writer = client.get_parameter(Name=f"/db/{ENV}/{color}/writer-db-url", WithDecryption=True)
    reader = client.get_parameter(Name=f"/db/{ENV}/{color}/reader-db-url", WithDecryption=True)
    return color, writer["Parameter"]["Value"], reader["Parameter"]["Value"]


def cold_times(make: Callable[[], Any], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        make()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(n - 1, int(n * 0.99))]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CachedThreeCallReader:
    """The three-call reader behind a plain 60 s cache, for a fair fleet comparison."""

    def __init__(self, client: Any, clock: FakeClock, ttl: float) -> None:
        self.client, self.clock, self.ttl = client, clock, ttl
        self.at = -1e18

    def resolve(self) -> None:
        if self.clock() - self.at >= self.ttl:
            three_call_reader(self.client)
            self.at = self.clock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--cold", type=int, default=30)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        seed = SsmStore(region="us-east-1", endpoint_url=endpoint)
        layout = Layout(ENV)
        for color in Color:
            for role in ("writer", "reader"):
                seed.put(
                    layout.url(color, role),  # type: ignore[arg-type]
                    f"postgresql://app_{color}:pw@{role}.example:5432/app",
                    secure=True,
                )
        seed.put(layout.pointer, "blue")

        # API calls per cold resolve.
        store = SsmStore(region="us-east-1", endpoint_url=endpoint)
        credflip_calls = counter(store.client)
        Resolver(store=store).resolve(ENV)
        plain = boto3.session.Session().client("ssm", endpoint_url=endpoint)
        plain_calls = counter(plain)
        three_call_reader(plain)

        # Wall time per cold resolve, client creation included.
        def cold_credflip() -> None:
            Resolver(store=SsmStore(region="us-east-1", endpoint_url=endpoint)).resolve(ENV)

        def cold_three() -> None:
            three_call_reader(boto3.session.Session().client("ssm", endpoint_url=endpoint))

        cold_three()  # warm botocore's own caches for both
        c50, c99 = cold_times(cold_credflip, args.cold)
        t50, t99 = cold_times(cold_three, args.cold)

        # A fleet serving traffic continuously (one resolve per simulated second).
        clock = FakeClock()
        fleet_store = SsmStore(region="us-east-1", endpoint_url=endpoint)
        fleet_calls = counter(fleet_store.client)
        resolvers = [Resolver(store=fleet_store, ttl=60, clock=clock) for _ in range(args.clients)]
        fleet_plain = boto3.session.Session().client("ssm", endpoint_url=endpoint)
        fleet_plain_calls = counter(fleet_plain)
        readers = [CachedThreeCallReader(fleet_plain, clock, 60) for _ in range(args.clients)]
        for second in range(args.minutes * 60):
            clock.now = float(second)
            for resolver in resolvers:
                resolver.resolve(ENV)
            for reader in readers:
                reader.resolve()
        credflip_rate = len(fleet_calls) / args.minutes
        plain_rate = len(fleet_plain_calls) / args.minutes
    finally:
        server.stop()

    print(f"{'':<44} {'credflip.resolve':>18} {'3-call reader':>15}")
    print(f"{'API calls per cold resolve':<44} {len(credflip_calls):>18} {len(plain_calls):>15}")
    print(f"{'cold resolve incl. client, median':<44} {c50:>16.1f}ms {t50:>13.1f}ms")
    print(f"{'cold resolve incl. client, p99':<44} {c99:>16.1f}ms {t99:>13.1f}ms")
    print(
        f"{f'SSM calls/min, {args.clients} clients, TTL 60 s':<44} "
        f"{credflip_rate:>18.0f} {plain_rate:>15.0f}"
    )
    print(
        f"{'largest fleet within 40 TPS (TTL 60 s)':<44} "
        f"{QUOTA_PER_MINUTE * args.clients / credflip_rate:>18.0f} "
        f"{QUOTA_PER_MINUTE * args.clients / plain_rate:>15.0f}"
    )
    print(f"calls seen: credflip {sorted(set(credflip_calls))}, reader {sorted(set(plain_calls))}")


if __name__ == "__main__":
    main()
