"""Parse, build and redact SQLAlchemy-style database URLs.

``postgresql://user:pass@host:5432/app?sslmode=require``. User and password are
percent-encoded, so any password round-trips. ``str()`` and ``repr()`` of a
:class:`DbUrl` mask the password; only :meth:`DbUrl.render` with
``show_password=True`` reveals it, and only code that writes the store or hands
the URL to an application calls that.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .errors import UsageError

__all__ = [
    "MASK",
    "DbUrl",
    "libpq_kwargs",
    "mask_url",
    "mysqlclient_kwargs",
    "pymysql_kwargs",
    "scrub",
    "scrubbed_line",
]

MASK = "***"

_SCHEME_RE = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9_]+)?")


@dataclass(frozen=True)
class DbUrl:
    """A database URL split into parts; the password is never shown by ``repr``."""

    scheme: str
    host: str
    user: str = ""
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    database: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, *, what: str = "URL") -> DbUrl:
        """Parse *text*; raise :class:`UsageError` naming *what* when it is malformed.

        The message never repeats *text*, which may hold a password.
        """
        if not isinstance(text, str) or "://" not in text:
            raise UsageError(
                f"{what} is not a database URL: expected scheme://user:password@host:port/dbname"
            )
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            raise UsageError(f"{what} has an invalid port: use a number from 1 to 65535") from None
        scheme = parts.scheme.lower()
        if not _SCHEME_RE.fullmatch(scheme):
            raise UsageError(f"{what} has an invalid scheme: use e.g. postgresql:// or mysql://")
        if not parts.hostname:
            raise UsageError(f"{what} has no host: expected scheme://user:password@host/dbname")
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"{what} has an invalid port: use a number from 1 to 65535")
        database = unquote(parts.path.lstrip("/"))
        if "/" in database:
            raise UsageError(f"{what} has a path with '/': give just the database name")
        try:
            query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        except ValueError:
            raise UsageError(f"{what} has a malformed query string") from None
        return cls(
            scheme=scheme,
            host=parts.hostname,
            user=unquote(parts.username or ""),
            password=None if parts.password is None else unquote(parts.password),
            port=port,
            database=database,
            query=query,
        )

    @property
    def backend(self) -> str:
        """The scheme without its driver suffix: ``postgresql+psycopg`` → ``postgresql``."""
        return self.scheme.split("+", 1)[0]

    @property
    def family(self) -> str:
        """``postgresql`` or ``mysql`` (``postgres`` and ``mariadb`` included)."""
        return {"postgres": "postgresql", "mariadb": "mysql"}.get(self.backend, self.backend)

    def with_credentials(self, user: str, password: str | None) -> DbUrl:
        """Return a copy that logs in as *user* with *password*."""
        return replace(self, user=user, password=password)

    def render(self, *, show_password: bool = False) -> str:
        """Return the URL as text; the password is masked unless *show_password*."""
        netloc = ""
        if self.user:
            netloc = quote(self.user, safe="")
            if self.password is not None:
                secret = quote(self.password, safe="") if show_password else MASK
                netloc += f":{secret}"
            netloc += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc += host
        if self.port is not None:
            netloc += f":{self.port}"
        text = f"{self.scheme}://{netloc}"
        if self.database:
            text += "/" + quote(self.database, safe="")
        if self.query:
            text += "?" + urlencode(self.query)
        return text

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"DbUrl({self.render()!r})"

    @property
    def secret(self) -> str:
        """The URL with its password, for writing to the store or connecting."""
        return self.render(show_password=True)

    def same_server(self, other: DbUrl) -> bool:
        """True when both URLs name the same host, port and database."""
        return (self.backend, self.host, self.port, self.database) == (
            other.backend,
            other.host,
            other.port,
            other.database,
        )


def mask_url(text: str) -> str:
    """Mask the password of a URL given as text; text that does not parse is hidden."""
    try:
        return DbUrl.parse(text).render()
    except UsageError:
        return MASK


def scrub(text: str, secrets: list[str] | tuple[str, ...] | set[str]) -> str:
    """Replace every occurrence of each secret (and its URL-encoded form) in *text*."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, MASK)
    return text


def scrubbed_line(text: str, secrets: list[str] | tuple[str, ...] | set[str], limit: int) -> str:
    """*text* with every secret masked, on one line, cut at a word (marked ``…``)
    when longer than *limit*: what a record keeps of an error."""
    return textwrap.shorten(scrub(text, secrets), limit, placeholder=" …")


# -- driver connect arguments: the engines and the client integrations use them --


def libpq_kwargs(url: DbUrl) -> dict[str, Any]:
    """libpq keyword arguments for *url* (query options such as sslmode pass through)."""
    kwargs: dict[str, Any] = dict(url.query)
    kwargs.update(host=url.host, user=url.user, dbname=url.database or url.user)
    if url.port is not None:
        kwargs["port"] = url.port
    if url.password is not None:
        kwargs["password"] = url.password
    return kwargs


#: URL query options passed to PyMySQL, with how to read their text.
_QUERY_OPTIONS: dict[str, Any] = {
    "charset": str,
    "collation": str,
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_disabled": "bool",
    "ssl_verify_cert": "bool",
    "ssl_verify_identity": "bool",
    "connect_timeout": int,
    "read_timeout": int,
    "write_timeout": int,
    "init_command": str,
    "sql_mode": str,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def pymysql_kwargs(url: DbUrl) -> dict[str, Any]:
    """PyMySQL keyword arguments for *url*.

    Query options PyMySQL understands pass through (``ssl_ca``, ``charset``,
    ...); any other is refused rather than dropped, so that a URL asking for
    TLS never connects without it.
    """
    kwargs: dict[str, Any] = {
        "host": url.host,
        "port": url.port or 3306,
        "user": url.user,
        "password": url.password or "",
    }
    if url.database:
        kwargs["database"] = url.database
    for key, value in url.query:
        kind = _QUERY_OPTIONS.get(key)
        if kind is None:
            raise UsageError(
                f"MySQL URL option {key!r} is not supported: use "
                f"{', '.join(sorted(_QUERY_OPTIONS))} (for TLS: ssl_ca=PATH, "
                f"ssl_verify_cert=true)"
            )
        if kind == "bool":
            if value.lower() not in _TRUE | _FALSE:
                raise UsageError(f"MySQL URL option {key!r} takes true or false")
            kwargs[key] = value.lower() in _TRUE
        elif kind is int:
            if not value.isdigit():
                raise UsageError(f"MySQL URL option {key!r} takes a number of seconds")
            kwargs[key] = int(value)
        else:
            kwargs[key] = value
    return kwargs


def mysqlclient_kwargs(url: DbUrl) -> dict[str, Any]:
    """mysqlclient (``MySQLdb``) keyword arguments for *url*, as Django's MySQL backend
    passes them: the same URL options as :func:`pymysql_kwargs`, TLS spelled the
    mysqlclient way (``ssl={...}``, ``ssl_mode``)."""
    kwargs = pymysql_kwargs(url)
    ssl = {
        name: kwargs.pop(f"ssl_{name}") for name in ("ca", "cert", "key") if f"ssl_{name}" in kwargs
    }
    if ssl:
        kwargs["ssl"] = ssl
    disabled = kwargs.pop("ssl_disabled", False)
    verify_cert = kwargs.pop("ssl_verify_cert", False)
    verify_identity = kwargs.pop("ssl_verify_identity", False)
    if disabled:
        kwargs["ssl_mode"] = "DISABLED"
    elif verify_identity:
        kwargs["ssl_mode"] = "VERIFY_IDENTITY"
    elif verify_cert:
        kwargs["ssl_mode"] = "VERIFY_CA"
    return kwargs
