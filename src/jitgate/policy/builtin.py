"""The built-in default policy, written in Python.

It implements the default policy pack a new install runs with:

* unknown statements (the parser could not understand them) are denied;
* dangerous statements (server file access, program execution, dblink, DO blocks,
  LOAD, ALTER SYSTEM, role changes, …) are denied;
* DROP and TRUNCATE on a connection tagged ``env=prod`` are denied;
* UPDATE/DELETE without a WHERE clause (or with an always-true one) need review;
* everything else is allowed.

The Cedar engine (policies stored in the database) replaces it when configured; this one
stays as the fail-closed fallback and as the reference the Cedar pack is tested against.
"""

from __future__ import annotations

from jitgate.policy.types import Decision, Request
from jitgate.sql.types import CommandKind


class BuiltinPolicy:
    version = 1
    reads_text = False  # decides on the classification only (see StatementGate)

    def decide(self, request: Request) -> Decision:
        stmt = request.statement
        if stmt is None:
            return Decision.allow("builtin:allow")
        if stmt.kind is CommandKind.UNKNOWN:
            detail = f": {stmt.error}" if stmt.error else ""
            return Decision.deny(f"statement not understood{detail}", "builtin:deny-unknown")
        if stmt.dangerous:
            return Decision.deny("; ".join(stmt.dangerous), "builtin:deny-dangerous")
        prod = request.target.tags.get("env") == "prod"
        if prod and (stmt.kind is CommandKind.TRUNCATE or stmt.tag.startswith("DROP")):
            return Decision.deny(
                f"{stmt.tag} is not allowed on production connections", "builtin:deny-drop-prod"
            )
        if stmt.has_where is False or (stmt.has_where and stmt.trivial_where):
            return Decision.review(
                f"{stmt.kind.value.upper()} without a WHERE clause needs approval",
                "builtin:review-unbounded-write",
            )
        return Decision.allow("builtin:allow")
