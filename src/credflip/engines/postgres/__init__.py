"""PostgreSQL: the engine (:mod:`.engine`) composed of its connection (:mod:`.connection`),
the admin's rights (:mod:`.admin_rights`), users and their rights (:mod:`.grants`),
``init`` (:mod:`.adopt`) and what it observes (:mod:`.observe`); its catalog reads
(:mod:`.catalog`), its statements as data (:mod:`.plan`) and the SQL of what it shows the
drain (:mod:`.signals`)."""

from .engine import PostgresEngine, default_group, scram_verifier

__all__ = ["PostgresEngine", "default_group", "scram_verifier"]
