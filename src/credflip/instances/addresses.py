"""Where an instance is: ``host:port`` addresses, :class:`Instance`, and the env's list of them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UsageError
from ..urls import DbUrl

_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d+))?"
)


def parse_address(text: str, *, what: str = "--instance") -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port`` → ``(host, port)``; raise UsageError otherwise."""
    match = _ADDRESS.fullmatch(text.strip()) if isinstance(text, str) else None
    port = int(match["port"]) if match and match["port"] else None
    if match is None or (port is not None and not 0 < port < 65536):
        raise UsageError(f"invalid {what} {text!r}: use HOST or HOST:PORT, e.g. db-2.internal:5432")
    return (match["v6"] or match["host"]).lower(), port


def format_address(host: str, port: int | None) -> str:
    """The inverse of :func:`parse_address`."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@dataclass(frozen=True)
class Instance:
    """One server the drain watches."""

    host: str
    port: int | None
    #: Where it came from: ``admin URL``, ``writer URL``, ``reader URL``,
    #: ``--instance`` or ``Aurora``.
    source: str

    @property
    def address(self) -> str:
        """``host:port`` (the port only when known)."""
        return format_address(self.host, self.port)

    def on(self, url: DbUrl) -> DbUrl:
        """*url* pointed at this instance (same user, password, database and options)."""
        return dataclasses.replace(url, host=self.host, port=self.port)


def normalize(
    stored: Iterable[str], add: Iterable[str] = (), forget: Iterable[str] = ()
) -> list[str]:
    """*stored* plus *add* minus *forget*, each as ``host:port``, in order, without repeats."""
    gone = {format_address(*parse_address(t)) for t in forget}
    out: list[str] = []
    for text in (*stored, *add):
        address = format_address(*parse_address(text))
        if address not in gone and address not in out:
            out.append(address)
    return out


def gather(
    admin_url: DbUrl, urls: Iterable[tuple[str, DbUrl]], stored: Iterable[str]
) -> list[Instance]:
    """The admin's host first, then the labelled URLs' hosts and the stored ones, deduplicated."""
    default = _default_port(admin_url)
    out: list[Instance] = []
    seen: set[str] = set()

    def add(host: str, port: int | None, source: str) -> None:
        inst = Instance(host.lower(), port or default, source)
        if inst.address not in seen:
            seen.add(inst.address)
            out.append(inst)

    add(admin_url.host, admin_url.port, "admin URL")
    for label, url in urls:
        add(url.host, url.port, label)
    for text in stored:
        add(*parse_address(text), "--instance")
    return out


def _default_port(url: DbUrl) -> int:
    return 5432 if url.backend in ("postgresql", "postgres", "psql") else 3306
