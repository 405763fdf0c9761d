"""Build the Lambda artifacts, reproducibly: same inputs, same zip bytes.

    python deploy/package.py [--out dist] [--arch x86_64|arm64]

- ``credflip-layer.zip``: credflip's client side under ``python/`` for a Lambda
  layer (the resolver, the stores, nothing that needs a database driver,
  ``click`` or ``rich``; with the AWS Parameters and Secrets Lambda Extension it
  needs no boto3, else boto3 comes from the Lambda runtime).
- ``credflip-rotator.zip``: the rotation handler (``credflip.aws_lambda.handler``)
  with psycopg (binary wheel) and PyMySQL for Lambda's Linux and Python 3.12,
  at the versions pinned in ``deploy/rotator-requirements.txt``.

Every entry has the same timestamp (1980-01-01) and mode, in sorted order, so
two builds from the same sources and pins give identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "credflip"
PYTHON_VERSION = "3.12"
#: Lambda's Amazon Linux 2023 has glibc 2.34: manylinux2014 and 2_28 wheels both run.
PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
EPOCH = (1980, 1, 1, 0, 0, 0)

#: The client side: what an application's Lambda needs to follow the pointer.
LAYER_MODULES = (
    "__init__.py",
    "aws_clients.py",
    "errors.py",
    "layout.py",
    "urls.py",
    "durations.py",
    "resolver.py",
    "retry.py",
    "py.typed",
    "stores/__init__.py",
    "stores/base.py",
    "stores/sqlite.py",
    "stores/ssm.py",
    "stores/ssm_extension.py",
    "stores/ssm_keys.py",
)
#: Left out of the rotator: the command line, the demo and the client integrations
#: (SQLAlchemy, psycopg's pool, Django), which the handler never imports (a name
#: ending in "/" leaves out that folder).
ROTATOR_SKIP = ("cli/", "__main__.py", "demo/", "django/", "sqlalchemy.py", "psycopg.py")


def write_zip(path: Path, files: dict[str, Path]) -> None:
    """Zip *files* (archive name to source) deterministically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            info.create_system = 3  # Unix, whatever the build machine
            archive.writestr(info, files[name].read_bytes(), compresslevel=9)


def tree(base: Path, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file under *base* as ``prefix/relative``, without caches and *skip*
    (a name ending in ``/`` skips that folder)."""
    out: dict[str, Path] = {}
    for file in base.rglob("*"):
        rel = file.relative_to(base).as_posix()
        skipped = any(rel == s or (s.endswith("/") and rel.startswith(s)) for s in skip)
        if file.is_dir() or "__pycache__" in file.parts or rel.endswith(".pyc") or skipped:
            continue
        out[f"{prefix}{rel}"] = file
    return out


def build_layer(out: Path) -> Path:
    files = {f"python/credflip/{m}": PACKAGE / m for m in LAYER_MODULES}
    target = out / "credflip-layer.zip"
    write_zip(target, files)
    return target


def build_rotator(out: Path, arch: str) -> Path:
    if arch not in PLATFORMS:
        raise SystemExit(f"package: error: unknown --arch {arch!r}: use x86_64 or arm64")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        platforms = [arg for p in PLATFORMS[arch] for arg in ("--platform", p)]
        pip = subprocess.run(  # noqa: S603 - pip with fixed arguments
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-compile",
                "--target",
                str(site),
                *platforms,
                "--implementation",
                "cp",
                "--python-version",
                PYTHON_VERSION,
                "--only-binary=:all:",
                "-r",
                str(ROOT / "deploy" / "rotator-requirements.txt"),
            ],
            check=False,
        )
        if pip.returncode != 0:
            raise SystemExit(
                f"package: error: pip could not fetch the drivers for Lambda {arch} (see above): "
                f"check the network to PyPI and the pins in deploy/rotator-requirements.txt"
            )
        shutil.rmtree(site / "bin", ignore_errors=True)
        files = tree(site, "")
        # pip records the install time and tool in RECORD/INSTALLER: not inputs.
        files = {n: p for n, p in files.items() if not n.endswith(("/RECORD", "/INSTALLER"))}
        files.update(tree(PACKAGE, "credflip/", skip=ROTATOR_SKIP))
        target = out / f"credflip-rotator{'' if arch == 'x86_64' else '-' + arch}.zip"
        write_zip(target, files)
    return target


def describe(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}: {path.stat().st_size / 1024:.0f} KiB, sha256 {digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--only", choices=["layer", "rotator"])
    args = parser.parse_args()
    if args.only != "rotator":
        print(describe(build_layer(args.out)))
    if args.only != "layer":
        print(describe(build_rotator(args.out, args.arch)))


if __name__ == "__main__":
    main()
