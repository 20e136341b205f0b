"""A live session's view of its grants, shared by every protocol's session.

A session puts the caller's active access grants for its connection into its policy
gate's context (``has_grant``, ``grant_scopes``), takes one use of a limited grant when
it starts, reloads when grants change, and, when policy no longer lets it stay, ends
with a message that says why ("jitgate: grant expired").
"""

from __future__ import annotations

import asyncio
import functools

from jitgate.access.service import AccessService
from jitgate.identity.principal import Authenticated
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision


class SessionGrants:
    def __init__(self, access: AccessService) -> None:
        self.access = access
        self.ids: set[str] = set()  # active grants, as last loaded
        self._scopes: dict[str, tuple[str, ...]] = {}  # their scopes, by grant id
        self.ended: set[str] = set()  # grants heard to have ended
        self.had: set[str] = set()  # every grant this session has counted, ever
        self._dropped: set[str] = set()  # dropped by drop(), not yet seen by a reload
        self.used: set[str] = set()  # grants this session took a use of
        # Changes are applied one at a time, in order: two overlapping reloads could
        # otherwise leave the older answer (a revoked grant) in force.
        self.lock = asyncio.Lock()

    async def load(self, who: Authenticated, connection: str, gate: StatementGate) -> None:
        """Put the caller's active grants for ``connection`` into the gate's context."""
        grants = await asyncio.to_thread(
            functools.partial(
                self.access.active_grants, who.principal, who.actor, connection, used=self.used
            )
        )
        # A reload that read the store before a revocation must not bring it back.
        self._scopes = {g.id: tuple(g.scope or ()) for g in grants if g.id not in self.ended}
        self.ids = set(self._scopes)
        self.had |= self.ids
        self._publish(gate)

    def drop(self, ended: tuple[str, ...], gate: StatementGate | None) -> None:
        """Take grants that ended out of the gate's context at once, before the reload.

        Called synchronously when the change is heard of: the next statement is decided
        without them even though the reload from the store is still on its way.
        """
        self.ended.update(ended)  # an ended grant never comes back
        gone = self.ids.intersection(ended)
        if not gone or gate is None:
            return
        for grant_id in gone:
            self._scopes.pop(grant_id, None)
        self.ids -= gone
        self._dropped |= gone
        self._publish(gate)

    def counted_before(self) -> set[str]:
        """The grants counted before the changes a reload is about to apply: what it has
        now plus what :meth:`drop` already took away (so the reload can say they ended)."""
        before = self.ids | self._dropped
        self._dropped = set()
        return before

    def _publish(self, gate: StatementGate) -> None:
        scopes = sorted({s for scope in self._scopes.values() for s in scope})
        gate.set_context(has_grant=bool(self._scopes), grant_scopes=scopes)

    async def use(self, who: Authenticated, connection: str, gate: StatementGate) -> None:
        """Count the session against a grant with limited uses (one use per session), then
        reload: grants whose uses are all taken no longer count for it."""
        used = await asyncio.to_thread(
            self.access.use_access_grant, who.principal, who.actor, connection
        )
        if used is not None:
            self.used.add(used.id)
        await self.load(who, connection, gate)

    async def end_message(self, ended: list[str], decision: Decision) -> str:
        """Why a session that may not stay is ended: its grant's end, or the policy."""
        if ended:
            grant = await asyncio.to_thread(self.access.get_grant, ended[0])
            reason = grant.revoke_reason or "ended"
            if reason == "task completed" and grant.task_id:
                return f"jitgate: grant ended: task {grant.task_id} was completed"
            return "jitgate: grant expired" if reason == "expired" else f"jitgate: grant {reason}"
        return f"jitgate: access ended: {decision.reason or 'not allowed any more'}"
