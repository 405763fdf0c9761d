"""Options the commands share, and secret input.

``common`` adds ``--env``/``--store``/``--prefix``. A URL option takes the
URL itself, ``-`` (a line of standard input), ``@PATH`` (a file's first line)
or its environment variable, and warns when a password is on the command
line. Messages never repeat a URL: it may hold a password.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar, overload

import click

from ..durations import parse_duration
from ..errors import UsageError
from ..layout import DEFAULT_PREFIX, Layout
from ..stores import open_store
from ..urls import DbUrl
from .render import err

F = TypeVar("F", bound=Callable[..., Any])


@overload
def common(func: F) -> F: ...


@overload
def common(*, create: bool = False, any_env: bool = False) -> Callable[[F], F]: ...


def common(
    func: F | None = None, *, create: bool = False, any_env: bool = False
) -> F | Callable[[F], F]:
    """Add ``--env``, ``--store`` and ``--prefix`` (with their env vars).

    Only a command made with ``create=True`` (``init``) may create a local
    store file; the others report a missing one and create nothing. A command
    made with ``any_env=True`` (``status``, for ``--all``) may leave out
    ``--env``: it gets ``layout=None`` and the ``prefix``.
    """

    def decorate(func: F) -> F:
        @click.option(
            "--env",
            "env",
            envvar="CREDFLIP_ENV",
            required=not any_env,
            help="Environment name, e.g. prod [$CREDFLIP_ENV].",
        )
        @click.option(
            "--store",
            envvar="CREDFLIP_STORE",
            default=None,
            help="sqlite:///PATH (default sqlite:///.credflip/params.db) or ssm://REGION "
            "[$CREDFLIP_STORE].",
        )
        @click.option(
            "--prefix",
            envvar="CREDFLIP_PREFIX",
            default=DEFAULT_PREFIX,
            show_default=True,
            help="Parameter prefix [$CREDFLIP_PREFIX].",
        )
        @functools.wraps(func)
        def wrapper(
            *args: Any, env: str | None, store: str | None, prefix: str, **kwargs: Any
        ) -> Any:
            layout = None if env is None else Layout(env, prefix)
            if any_env:
                kwargs["prefix"] = prefix
            with open_store(store, create=create) as opened:
                return func(*args, layout=layout, store=opened, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


# -- URLs and secret input ------------------------------------------------------

#: Environment variables of the URL options.
_URL_ENV = {
    "admin_url": "CREDFLIP_ADMIN_URL",
    "writer_url": "CREDFLIP_WRITER_URL",
    "reader_url": "CREDFLIP_READER_URL",
    "pooler": "CREDFLIP_POOLER_URL",
}


def _path_key(name: str) -> str:
    return f"credflip.path.{name}"


def _url_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A URL option's value: the URL itself, ``-`` (a line of stdin) or ``@PATH``.

    Messages never repeat the value: it may hold a password.
    """
    if value is None or param.name is None:
        return value
    name = "--" + param.name.replace("_", "-")
    env = _URL_ENV[param.name]
    if value == "-":
        first = ctx.meta.setdefault("credflip.stdin", name)
        if first != name:
            raise UsageError(
                f"{name} -: {first} already reads standard input, and only one option can; "
                f"pass {name} as @PATH or in ${env}"
            )
        line = sys.stdin.readline().strip()
        if not line:
            raise UsageError(f"{name} -: standard input is empty: pipe the URL in, one line")
        return line
    if value.startswith("@"):
        path = value[1:]
        ctx.meta[_path_key(param.name)] = path  # a path, never the secret
        try:
            with open(path, encoding="utf-8") as fh:
                line = fh.readline().strip()
        except OSError as exc:
            raise UsageError(
                f"{name} @{path}: cannot read the file ({(exc.strerror or str(exc)).lower()}); "
                f"give a readable file whose first line is the URL"
            ) from None
        if not line:
            raise UsageError(f"{name} @{path}: the file's first line is empty; put the URL there")
        return line
    source = ctx.get_parameter_source(param.name)
    if source is click.core.ParameterSource.COMMANDLINE and _has_password(value):
        err.print(
            f"credflip: warning: {name} has a password on the command line, where ps and shell "
            f"history show it; use {name} @FILE, {name} - (standard input) or ${env}"
        )
    return value


def _has_password(text: str) -> bool:
    try:
        return bool(DbUrl.parse(text).password)
    except UsageError:
        return False


def given_path(ctx: click.Context, name: str) -> str | None:
    """The file a URL option (``admin_url``, ...) was read from as ``@PATH``, if it was."""
    path = ctx.meta.get(_path_key(name))
    return path if isinstance(path, str) else None


def url_option(name: str, help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """A URL option that keeps secrets off the command line (``-``, ``@PATH``, env var)."""
    env = _URL_ENV[name.removeprefix("--").replace("-", "_")]
    return click.option(
        name,
        envvar=env,
        default=None,
        required=required,
        metavar="URL|-|@PATH",
        callback=_url_value,
        help=f"{help_text} '-' reads a line of standard input, @PATH a file's first line [${env}].",
    )


def pooler_option(func: F) -> F:
    """Add ``--pooler`` (PgBouncer's console URL, a secret like the other URLs)."""
    return url_option(
        "--pooler",
        "PgBouncer's console, pgbouncer://USER:PASSWORD@HOST:PORT/pgbouncer (a stats_users "
        "user), when the colors' URLs go through PgBouncer; stored as {prefix}/{env}/pooler-url.",
    )(func)


def admin_option(func: F) -> F:
    """Add ``--admin-url``."""
    return url_option("--admin-url", "Admin URL (else the parameter {prefix}/{env}/admin-db-url).")(
        func
    )


# -- other options -------------------------------------------------------------


def _duration(what: str) -> Callable[[click.Context, click.Parameter, str | None], float | None]:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
        return None if value is None else parse_duration(value, what=what)

    return convert


def duration_option(name: str, default: str | None, help_text: str) -> Callable[[F], F]:
    """A duration option (``500ms``, ``90s``, ``15m``) parsed into seconds (None: not given)."""
    return click.option(
        name,
        default=default,
        show_default=default is not None,
        callback=_duration(name),
        help=help_text,
    )


def _positive_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    seconds = _duration(f"--{(param.name or '').replace('_', '-')}")(ctx, param, value)
    if seconds is None or not seconds > 0:
        raise UsageError(f"--{(param.name or '').replace('_', '-')} must be positive, like 1s")
    return seconds


def lock_timeout_option(func: F) -> F:
    """Add ``--lock-timeout`` (seconds, default 1 s; refused before anything runs unless
    positive)."""
    return click.option(
        "--lock-timeout",
        default="1s",
        show_default=True,
        callback=_positive_duration,
        help="How long one statement may wait for a lock another session holds (an "
        "application idle in a transaction); requests queue behind a waiting statement. The "
        "server cancels it; it is tried again after a pause, and when the phase's budget runs "
        "out credflip stops naming that session.",
    )(func)


def instance_option(func: F) -> F:
    """Add ``--instance HOST[:PORT]`` (repeatable)."""
    return click.option(
        "--instance",
        multiple=True,
        metavar="HOST[:PORT]",
        help="Another instance to watch (a replica), reached with the admin's login; kept in the "
        "env's state. Repeatable.",
    )(func)


def unwatched_ok_option(func: F) -> F:
    """Add ``--unwatched-ok HOST`` (repeatable)."""
    return click.option(
        "--unwatched-ok",
        multiple=True,
        metavar="HOST",
        help="Accept that a replica the servers report on HOST (or an Aurora member of that "
        "name) is not watched: the drain cannot see the old user's clients there. Per run. "
        "Repeatable.",
    )(func)


def rds_proxy_options(func: F) -> F:
    """Add ``--rds-proxy NAME`` and ``--rds-proxy-endpoint HOST[:PORT]``."""
    func = click.option(
        "--rds-proxy-endpoint",
        default=None,
        metavar="HOST[:PORT]",
        help="Where clients reach the RDS Proxy, when not at the endpoint the RDS API gives "
        "(a name of your own, a tunnel); verify logs in there.",
    )(func)
    return click.option(
        "--rds-proxy",
        default=None,
        metavar="NAME",
        help="The env is behind this RDS Proxy (kept for the env): one Secrets Manager secret "
        "per color (credflip/PREFIX/ENV/COLOR), written in prepare; the proxy must list both.",
    )(func)


def _events_bus(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from ..events import parse_bus

    parse_bus(value)  # a bad name is refused before anything runs
    return value


def events_option(func: F) -> F:
    """Add ``--events BUS`` (the EventBridge bus of the run's milestones; None: no events)."""
    return click.option(
        "--events",
        "events_bus",
        envvar="CREDFLIP_EVENTS",
        default=None,
        metavar="BUS",
        callback=_events_bus,
        help="Send each milestone (started, switched, legacy clients, drain timeout, done, "
        "failed, halted, rolled back) as an EventBridge event (source credflip) to this bus, "
        "by name (in the store's or AWS's region) or ARN; a failed send is one warning, never "
        "a failed run [$CREDFLIP_EVENTS].",
    )(func)


def json_option(func: F) -> F:
    """Add ``--json`` (as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def yes_option(func: F) -> F:
    """Add ``--yes``/``-y``."""
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(func)


def confirm(question: str, *, yes: bool) -> None:
    """Ask *question* on a terminal unless ``--yes``; no aborts (``credflip: aborted``)."""
    if not yes and sys.stdin.isatty():
        click.confirm(question, abort=True)
