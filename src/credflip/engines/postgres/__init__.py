"""PostgreSQL: the engine (:mod:`.engine`), its catalog reads (:mod:`.catalog`), its
statements as data (:mod:`.plan`) and what it shows the drain (:mod:`.signals`)."""

from .engine import PostgresEngine, default_group, scram_verifier

__all__ = ["PostgresEngine", "default_group", "scram_verifier"]
