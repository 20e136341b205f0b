"""Writing and reading the administrative audit log.

Event names are typed ``subject:action`` strings (``connection:create``,
``token:revoke``, ``user:login_failed`` …). An event is written in the same database
transaction as the change it describes, so the log cannot miss a committed change.
Details never contain secrets: callers pass only names, ids and changed field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitgate.identity.principal import Authenticated
from jitgate.store.models import AdminAuditRow


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    action: str
    outcome: str
    actor: str | None
    on_behalf_of: str | None
    target_type: str | None
    target_name: str | None
    client_addr: str | None
    details: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: AdminAuditRow) -> AuditEvent:
        return cls(
            id=row.id,
            at=row.at,
            action=row.action,
            outcome=row.outcome,
            actor=row.actor_name,
            on_behalf_of=row.on_behalf_of,
            target_type=row.target_type,
            target_name=row.target_name,
            client_addr=row.client_addr,
            details=dict(row.details or {}),
        )


class AuditLog:
    @staticmethod
    def record(
        session: Session,
        action: str,
        *,
        caller: Authenticated | None,
        target_type: str | None = None,
        target_name: str | None = None,
        details: Mapping[str, Any] | None = None,
        client_addr: str | None = None,
        outcome: str = "success",
    ) -> None:
        actor = caller.actor or caller.principal if caller else None
        session.add(
            AdminAuditRow(
                action=action,
                outcome=outcome,
                actor_id=actor.id if actor else None,
                actor_name=actor.name if actor else None,
                on_behalf_of=caller.principal.name if caller and caller.actor else None,
                target_type=target_type,
                target_name=target_name,
                client_addr=client_addr,
                details=dict(details or {}),
            )
        )

    @staticmethod
    def query(
        session: Session,
        *,
        after_id: int | None = None,
        limit: int = 100,
        action: str | None = None,
        actor: str | None = None,
        target_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEvent]:
        stmt = select(AdminAuditRow).order_by(AdminAuditRow.id).limit(limit)
        if after_id is not None:
            stmt = stmt.where(AdminAuditRow.id > after_id)
        if action:
            if action.endswith(":*"):
                stmt = stmt.where(AdminAuditRow.action.startswith(action[:-1]))
            else:
                stmt = stmt.where(AdminAuditRow.action == action)
        if actor:
            stmt = stmt.where(AdminAuditRow.actor_name == actor)
        if target_name:
            stmt = stmt.where(AdminAuditRow.target_name == target_name)
        if since:
            stmt = stmt.where(AdminAuditRow.at >= since)
        if until:
            stmt = stmt.where(AdminAuditRow.at < until)
        return [AuditEvent.from_row(row) for row in session.scalars(stmt)]
