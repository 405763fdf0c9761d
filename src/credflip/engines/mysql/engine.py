"""MySQL 8, MariaDB >= 10.6 and Aurora MySQL through PyMySQL: the engine.

Accounts are ``user@host``: the new color is created for every host pattern
the active user has, and accounts of the old color that the active user no
longer has are dropped (last). Rights are read as data
(``information_schema.*_PRIVILEGES``, ``mysql.procs_priv``, ``proxies_priv``
and the role tables: global, database, table, column, routine and proxy
privileges, role grants and default roles, ``WITH GRANT OPTION``) and only
the difference is planned: what the inactive user lacks is granted first,
what it has extra is revoked after every grant, equal rights change nothing
(:mod:`.rights`). So the views, routines, triggers and events it is the
DEFINER of keep their rights at every statement boundary. TLS requirements
and resource limits come from ``SHOW CREATE USER``, set only when they
differ.

Passwords go to the server as a ``mysql_native_password`` hash computed here
(``IDENTIFIED BY PASSWORD '*...'`` on MariaDB, ``IDENTIFIED WITH
mysql_native_password AS '*...'`` on MySQL) whenever the active user uses that
plugin; only ``caching_sha2_password`` on MySQL 8 needs the plaintext, which
MySQL rewrites as ``<secret>`` in its logs.

Every change is planned first (:mod:`.plan`, :mod:`.rights`) from what
:mod:`.catalog` reads, and executed in one place.

The engine is composed of its parts: :mod:`.connection` (the connection,
errors, running a statement), :mod:`.catalog` (accounts and grants as the
server shows them), :mod:`.grants` (users and their rights) and
:mod:`.observe` (threads, the drain's signals, Aurora members).
"""

from __future__ import annotations

import dataclasses

from .. import register
from .catalog import MysqlCatalog
from .connection import MysqlConnection
from .grants import MysqlGrants
from .observe import MysqlObserver

__all__ = ["MysqlEngine"]


@register
@dataclasses.dataclass
class MysqlEngine(MysqlGrants, MysqlObserver, MysqlCatalog, MysqlConnection):
    """MySQL or MariaDB through PyMySQL, with an admin that has CREATE USER."""

    name = "mysql"
    schemes = ("mysql", "mariadb")
