"""Connection poolers in front of an env's database: what they add to verify, drain and retire.

An env names at most one pooler (``init --pooler``, kept as the SecureString
``{prefix}/{env}/pooler-url``). Today that is PgBouncer (:mod:`.pgbouncer`):
its console (:mod:`.console`) shows which clients use a user and which of
its server connections are only kept idle (:mod:`.view`), and the SCRAM lines
of an ``auth_file`` come from :mod:`.userlist`.

RDS Proxy (:mod:`.rds_proxy`) is named apart (``init --rds-proxy``, kept as
``{prefix}/{env}/rds-proxy``): its two Secrets Manager secrets, its ``Auth``
list, and a drain that leaves its idle sessions be.
"""

from __future__ import annotations

from .pgbouncer import DEFAULT_PORT, PgBouncer, parse_pooler_url

__all__ = ["DEFAULT_PORT", "PgBouncer", "parse_pooler_url"]
