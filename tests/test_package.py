"""The Lambda artifacts: built reproducibly, and each runs alone on Python 3.12.

Each zip is unpacked into a clean directory and run by ``python3.12 -S -E``
(no site-packages, no environment paths) with only that directory and, as
Lambda's runtime does, boto3 on ``sys.path``; the layer also without boto3,
through the AWS Parameters and Secrets Lambda Extension's stand-in.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from apps import engine_app, serial
from extension_standin import ExtensionStandIn
from helpers import assert_pointer_connects, login_error, seed

from credflip import commands
from credflip.layout import Color, Layout
from credflip.stores.ssm import SsmStore

ROOT = Path(__file__).resolve().parent.parent
#: What Lambda's Python runtime provides: boto3 and its dependencies (pure Python).
RUNTIME = ("boto3", "botocore", "jmespath", "dateutil", "urllib3", "s3transfer", "six.py")


def python312() -> str:
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
    base = Path(root.stdout.strip() or Path.home() / ".pyenv")
    candidates = sorted(base.glob("versions/3.12*/bin/python3.12"))
    if not candidates:
        pytest.fail("Python 3.12 is needed to run the Lambda zips: install it with pyenv")
    return str(candidates[-1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "package.py"), "--out", str(out)], check=True
    )
    return out


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = Path(boto3.__file__).parent.parent
    base = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME:
        (base / name).symlink_to(site / name)
    return base


def unpack(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(into)
    return into


def run312(paths: list[Path], code: str, env: dict[str, str]) -> Any:
    """Run *code* on Python 3.12 with exactly *paths* added; return its JSON output."""
    script = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}\n" + code
    proc = subprocess.run(
        [python312(), "-S", "-E", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aws_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_a_second_build_is_byte_for_byte_the_same(dist: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "package.py"), "--out", str(tmp_path)], check=True
    )
    for name in ("credflip-layer.zip", "credflip-rotator.zip"):
        assert (dist / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_the_layer_holds_the_client_side_only(dist: Path) -> None:
    names = zipfile.ZipFile(dist / "credflip-layer.zip").namelist()
    assert all(n.startswith("python/credflip/") for n in names), names
    for needed in ("resolver.py", "stores/ssm.py", "stores/ssm_extension.py", "aws_clients.py"):
        assert f"python/credflip/{needed}" in names, needed
    for left_out in ("cli/", "rotation/", "engines/", "demo", "sqlalchemy.py"):
        assert not any(left_out in n for n in names), left_out


def test_the_rotator_holds_the_handler_and_its_drivers_not_the_client_integrations(
    dist: Path,
) -> None:
    names = zipfile.ZipFile(dist / "credflip-rotator.zip").namelist()
    for needed in ("credflip/aws_lambda.py", "credflip/rotation/", "credflip/engines/"):
        assert any(n.startswith(needed) for n in names), needed
    assert any(n.startswith("psycopg/") for n in names)
    assert any(n.startswith("pymysql/") for n in names)
    for left_out in ("cli/", "demo/", "django/", "sqlalchemy.py", "psycopg.py", "__main__.py"):
        assert not any(n.startswith("credflip/" + left_out) for n in names), left_out


def test_the_rotator_brings_its_own_time_zones(dist: Path, runtime: Path, tmp_path: Path) -> None:
    """Rotation windows name IANA zones: the rotator finds them in its own tzdata even
    where the system has no zone database (zoneinfo's search path emptied here)."""
    code = unpack(dist / "credflip-rotator.zip", tmp_path / "rotator")
    script = (
        "import json, zoneinfo\n"
        "zoneinfo.reset_tzpath(to=[])\n"
        "from credflip.windows import parse_windows\n"
        "office = parse_windows('Mon-Fri 09:00-16:00 Asia/Seoul')\n"
        "print(json.dumps([str(office), office.describe(1773014400.0)]))\n"
    )
    assert run312([code, runtime], script, {}) == [
        "Mon-Fri 09:00-16:00 Asia/Seoul",
        "Mon 2026-03-09 09:00 KST",
    ]


def test_the_layer_resolves_from_ssm_on_python_312(
    dist: Path, runtime: Path, tmp_path: Path, moto_endpoint: str
) -> None:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    layout = Layout("layered")
    url = "postgresql://app:s3cret@db.example.com:5432/shop"
    store.put(layout.pointer, "green")
    for role in ("writer", "reader"):
        store.put(layout.url(Color.GREEN, role), url, secure=True)  # type: ignore[arg-type]
    layer = unpack(dist / "credflip-layer.zip", tmp_path / "opt")
    code = f"""
import json, credflip
e = credflip.resolve("layered", store="ssm://us-east-1?endpoint_url={moto_endpoint}")
print(json.dumps({{"color": str(e.color), "writer": e.writer_url,
                  "loaded": sorted(m for m in ("psycopg", "pymysql", "click", "rich", "sqlalchemy")
                                   if m in sys.modules),
                  "python": sys.version_info[:2]}}))
"""
    out = run312([layer / "python", runtime], code, aws_env())
    assert out == {"color": "green", "writer": url, "loaded": [], "python": [3, 12]}


#: A function's code on the layer: each line in is an invocation (``refresh`` forces a
#: re-read), each line out what it resolved and which AWS SDK modules are loaded.
FUNCTION = """
import importlib.util, json, sys
import credflip
print(json.dumps({"boto3": importlib.util.find_spec("boto3") is not None}), flush=True)
for line in sys.stdin:
    e = (credflip.refresh if line.strip() == "refresh" else credflip.resolve)(ENV)
    sdk = sorted(m for m in ("boto3", "botocore") if m in sys.modules)
    print(json.dumps({"color": e.color.value, "writer": e.writer_url, "sdk": sdk}), flush=True)
"""


class Function312:
    """A Lambda-shaped process on Python 3.12 with *paths* only, invoked line by line."""

    def __init__(self, paths: list[Path], env: dict[str, str], function_env: str) -> None:
        script = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}\nENV = {function_env!r}"
        self.proc = subprocess.Popen(
            [python312(), "-S", "-E", "-c", script + FUNCTION],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
        )
        self.started = self.read()

    def read(self) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"the function said nothing: {self.proc.communicate()[1][-3000:]}")
        return json.loads(line)

    def invoke(self, what: str = "resolve") -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def test_the_layer_follows_flips_through_the_extension_without_boto3_on_python_312(
    dist: Path, tmp_path: Path, moto_endpoint: str
) -> None:
    """The layer alone (no boto3 to be found), in a Lambda with the extension (its cache
    off, as recommended): a flip reaches it within the TTL, a refresh at once."""
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    layout = seed(store, f"ext-layer{serial()}")
    layer = unpack(dist / "credflip-layer.zip", tmp_path / "opt")
    ttl = 2.0
    with ExtensionStandIn(moto_endpoint, ttl=0) as ext:
        env = {
            **aws_env(),
            **ext.environ(),
            "AWS_LAMBDA_FUNCTION_NAME": "orders",
            "CREDFLIP_STORE": f"ssm://us-east-1?endpoint_url={moto_endpoint}",
            "CREDFLIP_TTL": f"{ttl:g}",
        }
        function = Function312([layer / "python"], env, layout.env)
        try:
            assert function.started == {"boto3": False}
            first = function.invoke()
            assert first["color"] == "blue" and "@writer.db/app" in first["writer"]
            store.put(layout.pointer, "green")
            flipped = time.monotonic()
            # Its cache (filled before the flip) expires within 1.1 TTL: an invocation
            # that starts later sees green, however long the invocations take.
            while True:
                started = time.monotonic()
                seen = function.invoke()
                if seen["color"] != "blue":
                    break
                assert started - flipped < ttl * 1.1, "still blue past the TTL"
            assert seen["color"] == "green" and ext.requests >= 6
            store.put(layout.pointer, "blue")
            assert function.invoke("refresh")["color"] == "blue"
            assert seen["sdk"] == function.invoke()["sdk"] == []
        finally:
            function.close()


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_the_rotator_rotates_on_python_312(
    request: pytest.FixtureRequest,
    engine: str,
    dist: Path,
    runtime: Path,
    tmp_path: Path,
    moto_endpoint: str,
) -> None:
    app = engine_app(request, "postgresql15" if engine == "postgresql" else "mysql")
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    layout = Layout(f"zipped-{app.user.replace('_', '-')}")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotator = unpack(dist / "credflip-rotator.zip", tmp_path / "task")
    event = {
        "env": layout.env,
        "store": f"ssm://us-east-1?endpoint_url={moto_endpoint}",
        "client_ttl": "300ms",
        "quiet": "300ms",
    }
    code = f"""
import json
from credflip.aws_lambda import handler
class Context:
    def get_remaining_time_in_millis(self): return 600_000
print(json.dumps(handler({event!r}, Context())))
"""
    env = {**aws_env(), "CREDFLIP_ADMIN_URL": app.admin_url.secret}
    out = run312([rotator, runtime], code, env)
    assert out["status"] == "done" and out["to"] == "green", out
    assert assert_pointer_connects(store, layout) is Color.GREEN
    assert app.locked_marker in login_error(app.url)  # blue retired by the zip's handler
