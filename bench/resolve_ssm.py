"""A Lambda's cold start on SSM: the original reader, credflip with boto3, credflip
through the AWS Parameters and Secrets Lambda Extension.

Side by side in one run, against moto's server mode on loopback (real boto3,
real HTTP) and, for (c), the extension's stand-in (tests/extension_standin.py)
in front of it, its cache off (``SSM_PARAMETER_STORE_TTL=0``, as the README
recommends):

* (a) the original three-call boto3 reader, (b) ``credflip.resolve`` through
  boto3, (c) ``credflip.resolve`` through the extension (no boto3 import);
* wall time of a whole cold process per run (interpreter start, imports,
  client, resolve), the paths' runs interleaved: median and p90;
* SSM calls per cold resolve, and SSM calls per minute for a fleet of warm
  Lambdas that each serve traffic continuously with a 60 s TTL, and the largest
  fleet within SSM's default 40 TPS (2,400 calls a minute) for
  GetParameter/GetParameters together.

    python bench/resolve_ssm.py [--clients 100] [--minutes 10] [--cold 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.stores.base import Store
from credflip.stores.ssm import SsmStore
from credflip.stores.ssm_extension import SsmExtensionStore

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "tests"))
from extension_standin import ExtensionStandIn  # noqa: E402

ENV = "prod"
TTL = 60.0
QUOTA_PER_MINUTE = 40 * 60
PATHS = ("(a) 3-call reader", "(b) credflip, boto3", "(c) credflip, extension")

#: The original design's reader, as a whole process.
READER = """
import json, sys, boto3
client = boto3.session.Session().client("ssm", endpoint_url=sys.argv[1])
color = client.get_parameter(Name="/db/prod/blue-green-env")["Parameter"]["Value"]
for role in ("writer", "reader"):
    client.get_parameter(Name=f"/db/prod/{color}/{role}-db-url", WithDecryption=True)
print(json.dumps({"color": color, "boto3": "boto3" in sys.modules}))
"""
#: credflip's resolve, as a whole process (the store and path from the environment).
CREDFLIP = """
import json, sys, credflip
e = credflip.resolve("prod")
print(json.dumps({"color": e.color.value, "boto3": "boto3" in sys.modules,
                  "from": credflip.__file__}))
"""


def counter(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-send.ssm.*",
        lambda request, **_: calls.append(request.headers["X-Amz-Target"].decode()),
    )
    return calls


def three_call_reader(client: Any) -> None:
    """The original design: pointer, then the active color's two URLs."""
    color = client.get_parameter(Name=f"/db/{ENV}/blue-green-env")["Parameter"]["Value"]
    for role in ("writer", "reader"):
        client.get_parameter(Name=f"/db/{ENV}/{color}/{role}-db-url", WithDecryption=True)


class Cold:
    """Runs one path as a whole new process and times it, start to exit."""

    def __init__(self, code: str, env: dict[str, str], args: Iterable[str], boto3: bool) -> None:
        self.argv = [sys.executable, "-c", code, *args]
        self.env, self.boto3 = env, boto3
        self.samples: list[float] = []

    def run(self, *, keep: bool = True) -> None:
        start = time.perf_counter()
        done = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, check=False)
        took = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise SystemExit(f"resolve_ssm: a cold run failed:\n{done.stderr[-2000:]}")
        out = json.loads(done.stdout)
        expected = str(ROOT / "src" / "credflip" / "__init__.py")
        if (
            out["color"] != "blue"
            or out["boto3"] != self.boto3
            or out.get("from", expected) != expected
        ):
            raise SystemExit(f"resolve_ssm: a cold run did not do what it should: {out}")
        if keep:
            self.samples.append(took)

    def median_p90(self) -> tuple[float, float]:
        return statistics.median(self.samples), statistics.quantiles(self.samples, n=10)[-1]


def cold_paths(endpoint: str, ext: ExtensionStandIn) -> list[Cold]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("CREDFLIP_", "PYTHON", "AWS_"))
    }
    base.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(ROOT / "src"),
        CREDFLIP_STORE=f"ssm://us-east-1?endpoint_url={endpoint}",
    )
    lambda_env = {**base, **ext.environ(), "AWS_LAMBDA_FUNCTION_NAME": "bench"}
    return [
        Cold(READER, base, [endpoint], boto3=True),
        Cold(CREDFLIP, {**base, "CREDFLIP_SSM_EXTENSION": "off"}, [], boto3=True),
        Cold(CREDFLIP, lambda_env, [], boto3=False),
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CachedThreeCallReader:
    """The three-call reader behind a plain 60 s cache, for a fair fleet comparison."""

    def __init__(self, client: Any, clock: FakeClock) -> None:
        self.client, self.clock = client, clock
        self.at = -1e18

    def resolve(self, env: str) -> None:
        if self.clock() - self.at >= TTL:
            three_call_reader(self.client)
            self.at = self.clock()


def fleet_rate(make: Callable[[FakeClock], Any], calls: Callable[[], int], args: Any) -> float:
    """SSM calls a minute for ``args.clients`` clients resolving once a simulated second."""
    clock = FakeClock()
    clients = [make(clock) for _ in range(args.clients)]
    before = calls()
    for second in range(args.minutes * 60):
        clock.now = float(second)
        for client in clients:
            client.resolve(ENV)
    return (calls() - before) / args.minutes


def seed(endpoint: str) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=endpoint)
    layout = Layout(ENV)
    for color in Color:
        for role in ("writer", "reader"):
            url = f"postgresql://app_{color}:pw@{role}.example:5432/app"
            store.put(layout.url(color, role), url, secure=True)  # type: ignore[arg-type]
    store.put(layout.pointer, "blue")


def measure(endpoint: str, ext: ExtensionStandIn, args: Any) -> dict[str, list[Any]]:
    """Every row of the table, one value per path."""
    plain = boto3.session.Session().client("ssm", endpoint_url=endpoint)
    plain_calls = counter(plain)
    three_call_reader(plain)
    store = SsmStore(region="us-east-1", endpoint_url=endpoint)
    credflip_calls = counter(store.client)
    Resolver(store=store).resolve(ENV)

    def through(clock: FakeClock | None = None) -> Store:
        return SsmExtensionStore(port=ext.port, cache_ttl=0, clock=clock or time.monotonic)

    before = ext.ssm_calls
    Resolver(store=through()).resolve(ENV)
    per_cold = [len(plain_calls), len(credflip_calls), ext.ssm_calls - before]

    paths = cold_paths(endpoint, ext)
    for path in paths:
        path.run(keep=False)  # the files in the page cache, for every path alike
    for _ in range(args.cold):
        for path in paths:
            path.run()
    times = [path.median_p90() for path in paths]

    fleet_plain = boto3.session.Session().client("ssm", endpoint_url=endpoint)
    fleet_calls = counter(fleet_plain)
    rates = [
        fleet_rate(lambda c: CachedThreeCallReader(fleet_plain, c), fleet_calls.__len__, args),
        fleet_rate(lambda c: Resolver(store=store, ttl=TTL, clock=c), credflip_calls.__len__, args),
        fleet_rate(
            lambda c: Resolver(store=through(c), ttl=TTL, clock=c), lambda: ext.ssm_calls, args
        ),
    ]
    return {
        "SSM calls per cold resolve": per_cold,
        f"cold process, median (N={args.cold})": [f"{m:.1f}ms" for m, _ in times],
        f"cold process, p90 (N={args.cold})": [f"{p:.1f}ms" for _, p in times],
        f"SSM calls/min, {args.clients} warm Lambdas, TTL 60 s": [f"{r:.0f}" for r in rates],
        "largest fleet within 40 TPS (TTL 60 s)": [
            f"{QUOTA_PER_MINUTE * args.clients / r:.0f}" for r in rates
        ],
        "(c) / (a), median": [f"{times[2][0] / times[0][0]:.2f}", "", ""],
    }


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
    load = os.getloadavg()[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        seed(endpoint)
        with ExtensionStandIn(endpoint, ttl=0) as ext:
            os.environ["AWS_SESSION_TOKEN"] = ext.token
            rows = measure(endpoint, ext, args)
    finally:
        server.stop()
    print(f"{'':<44}" + "".join(f"{p:>26}" for p in PATHS))
    for label, values in rows.items():
        print(f"{label:<44}" + "".join(f"{v:>26}" for v in values))
    print(f"load average (1 min) at the start {load:.2f}, at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
