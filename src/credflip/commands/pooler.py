"""The env's PgBouncer: register its console (``init --pooler``, ``save-pooler-url``) and
print the lines of an ``auth_file`` for the colors (``pooler-userlist``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError, UsageError
from ..layout import Color, Layout
from ..poolers import PgBouncer
from ..state import State, load_state
from ..stores.base import Store
from ..urls import DbUrl

__all__ = ["UserlistLine", "check_pooler", "pooler_userlist", "save_pooler_url"]


def check_pooler(pooler_url: DbUrl, *, engine: str, admin_url: DbUrl | None = None) -> str:
    """PgBouncer's version, once its console answers; refused before anything changes
    when the env's engine is not PostgreSQL or the admin URL goes through it."""
    if engine != "postgresql":
        raise UsageError(f"--pooler names a PgBouncer, which pools PostgreSQL, not {engine}")
    pooler = PgBouncer(pooler_url)
    if admin_url is not None and pooler.serves(admin_url):
        raise UsageError(
            f"the admin URL goes through PgBouncer ({pooler.address}): give the admin URL of "
            f"the server itself; the colors' URLs are the ones that name PgBouncer"
        )
    try:
        return pooler.check()
    finally:
        pooler.close()


def save_pooler_url(store: Store, layout: Layout, *, pooler_url: DbUrl) -> str:
    """Register *pooler_url* as the env's PgBouncer (SecureString ``pooler-url``), once its
    console answers and unless the stored admin URL goes through it; return PgBouncer's
    version."""
    state = load_state(store, layout)
    stored = store.get(layout.admin_url)
    admin = DbUrl.parse(stored, what=layout.admin_url) if stored else None
    version = check_pooler(pooler_url, engine=state.engine, admin_url=admin)
    store.put(layout.pooler_url, pooler_url.secret, secure=True)
    return version


@dataclass(frozen=True)
class UserlistLine:
    """One color's line of a PgBouncer ``auth_file``, or why credflip has none."""

    color: Color
    user: str
    active: bool
    #: The SCRAM verifier the server holds (credflip set it); None when unknown.
    verifier: str | None

    def render(self) -> str:
        """``"user" "SCRAM-SHA-256$..."``, or a comment when the verifier is unknown."""
        if self.verifier is None:
            return (
                f"# {self.user} ({self.color}): credflip has not set its password since "
                f"PgBouncer was registered; keep the line your auth_file has for it"
            )
        return f"{_quoted(self.user)} {_quoted(self.verifier)}"


def pooler_userlist(store: Store, layout: Layout) -> list[UserlistLine]:
    """Each color's ``auth_file`` line, the active color first.

    The verifier is the SCRAM secret credflip gave the color in its last
    prepare (kept as the SecureString ``{color}/scram-verifier``): PgBouncer can
    log in to the server with a client's SCRAM exchange only when its secret is
    the server's, salt and iterations included; a secret computed anew would not
    do. It is no password: it lets a server check one, not a client log in.
    """
    state = load_state(store, layout)
    _require_pooler(store, layout, state)
    values = store.get_many([layout.pointer, *(layout.verifier(c) for c in Color)])
    active = Color.parse(values.get(layout.pointer, ""), where=f"pointer {layout.pointer}")
    return [
        UserlistLine(color, state.users[color], color is active, values.get(layout.verifier(color)))
        for color in (active, active.other)
    ]


def _require_pooler(store: Store, layout: Layout, state: State) -> None:
    if state.engine != "postgresql" or store.get(layout.pooler_url) is None:
        raise ConfigurationError(
            f"env {layout.env!r} has no PgBouncer: register it with 'credflip save-pooler-url "
            f"--env {layout.env} --pooler -' (its console URL on standard input)"
        )


def _quoted(text: str) -> str:
    """An auth_file field: in double quotes, a double quote written twice."""
    return '"' + text.replace('"', '""') + '"'
