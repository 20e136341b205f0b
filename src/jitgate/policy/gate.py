"""Per-session decision function with a cache: the hot path's view of policy.

A session's principal, actor and connection are fixed, so a decision depends only on the
statement's classification and the policy version. Decisions are cached under exactly the
classification fields policies can read (kind, tag, tables, functions, dangers, WHERE
flags, COPY target) plus the engine's version — *not* under the libpg_query fingerprint,
which ignores schema names, aliased table names and digits in names. A repeated
statement costs one dictionary look-up, and any policy change (new version) misses the
cache at once.

An engine whose rules can read the statement's text (``Request.text``) says so, per
action, with ``reads_text_for(action)`` (or for all actions with a true ``reads_text``
attribute); for those actions the text is part of the key, since two statements that
differ only in a constant may be decided differently. A policy that reads the text of
SSH environment variables leaves the SQL cache keyed on the classification alone. The
key also holds the session context's version (bumped when, say, the session's grants
change) and the current UTC hour, because policies may read ``context.hour`` and
``business_hours``.

No decision, no access: when the engine fails (the policy store cannot be read, a bug)
the statement is refused with the reason, and that refusal is never cached, so the next
statement asks again and runs as soon as the policies can be read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from jitgate.errors import Unavailable
from jitgate.identity.principal import Identity
from jitgate.policy.types import Decision, PolicyEngine, Request, Target
from jitgate.sql.types import CommandKind, Statement

CACHE_ENTRIES = 2048
FAIL_CLOSED = ("builtin:fail-closed",)  # no decision could be made: refused, never cached


class StatementGate:
    def __init__(
        self,
        engine: PolicyEngine,
        *,
        principal: Identity,
        actor: Identity | None,
        target: Target,
        client_addr: str | None,
        protocol: str = "sql",
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.principal = principal
        self.actor = actor
        self.target = target
        self.client_addr = client_addr
        self.protocol = protocol
        self.context = dict(context or {})
        self._cache: dict[tuple[object, ...], Decision] = {}
        self._context_version = 0
        # Whether the engine's rules read the text, per statement kind, for one version.
        self._reads: dict[CommandKind, bool] = {}
        self._reads_version: object = None
        # The last cached answer, by statement object: a prepared statement executed
        # again, or a text the classifier answered from its exact cache, skips the key.
        self._last: tuple[Statement, str, object, int, int, Decision] | None = None
        self.hits = 0
        self.misses = 0

    def __call__(self, statement: Statement, text: str) -> Decision:
        key: tuple[object, ...] | None = None
        kind = statement.kind
        if kind is not CommandKind.UNKNOWN:
            try:
                version = self.engine.version
            except Exception as exc:  # the policies cannot be read: fail closed, uncached
                return _failed(exc)
            hour = int(time.time() // 3600)
            last = self._last
            if (
                last is not None
                and last[0] is statement
                and last[2] == version
                and last[3] == self._context_version
                and last[4] == hour
                and last[1] == text
            ):
                self.hits += 1
                return last[5]
            if version != self._reads_version:
                self._reads.clear()
                self._reads_version = version
            reads = self._reads.get(kind)
            if reads is None:
                reads = self._reads[kind] = self._reads_text(statement)
            key = (
                kind,
                statement.tag,
                statement.tables_read,
                statement.tables_written,
                statement.functions,
                statement.dangerous,
                statement.has_where,
                statement.trivial_where,
                statement.writes_in_cte,
                statement.copy_target,
                statement.copy_direction,
                statement.read_only,
                statement.inner_kind,
                statement.prepared_name,
                version,
                self._context_version,
                hour,
                text if reads else None,
            )
            cached = self._cache.get(key)
            if cached is not None:
                self.hits += 1
                self._last = (statement, text, version, self._context_version, hour, cached)
                return cached
        self.misses += 1
        decision = self.decide(statement, text)
        if key is not None and decision.policies != FAIL_CLOSED:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def _reads_text(self, statement: Statement) -> bool:
        per_action = getattr(self.engine, "reads_text_for", None)
        if per_action is not None:
            return bool(per_action(f"{self.protocol}:{statement.kind.value}"))
        return bool(getattr(self.engine, "reads_text", False))

    def set_context(self, **updates: Any) -> None:
        """Change what policies see in ``context`` (e.g. grants); cached decisions lapse."""
        self.context.update(updates)
        self._context_version += 1

    def decide(self, statement: Statement | None, text: str, action: str | None = None) -> Decision:
        request = Request(
            action=action or f"{self.protocol}:{statement.kind.value if statement else 'unknown'}",
            principal=self.principal,
            actor=self.actor,
            target=self.target,
            statement=statement,
            text=text,
            client_addr=self.client_addr,
            context=self.context,
        )
        try:
            return self.engine.decide(request)
        except Exception as exc:  # fail closed: a broken policy never allows
            return _failed(exc)


def _failed(exc: Exception) -> Decision:
    """The refusal when no decision could be made (never cached)."""
    if isinstance(exc, Unavailable):
        return Decision.deny(exc.message, *FAIL_CLOSED)
    return Decision.deny(f"policy evaluation failed: {type(exc).__name__}", *FAIL_CLOSED)
