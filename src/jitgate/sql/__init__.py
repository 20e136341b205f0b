"""SQL statement classification: what a statement does, to which tables, how dangerously.

PostgreSQL statements are parsed with pglast (libpg_query); see :mod:`jitgate.sql.postgres`.
"""

from jitgate.sql.postgres import (
    DANGEROUS_FUNCTIONS,
    SIDE_EFFECT_FUNCTIONS,
    CacheStats,
    PostgresClassifier,
    classify_postgres,
    executed_as,
)
from jitgate.sql.types import Classification, CommandKind, Statement

__all__ = [
    "DANGEROUS_FUNCTIONS",
    "SIDE_EFFECT_FUNCTIONS",
    "CacheStats",
    "Classification",
    "CommandKind",
    "PostgresClassifier",
    "Statement",
    "classify_postgres",
    "executed_as",
]
