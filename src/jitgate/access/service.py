"""Access requests, approvals and grants: just-in-time access with an audit trail.

State machine of a request::

    pending ──approve (last step)──► approved ──► grant
       │ ├─approve (earlier step)──► pending (next step)
       │ ├─deny────────────────────► denied
       │ ├─cancel (requester)──────► cancelled
       │ └─pending expiry──────────► expired

Every transition is one conditional ``UPDATE … WHERE status = 'pending'`` (and the step
it saw), so two approvers racing, an approve racing a deny, or a request expiring while
someone approves it resolve to exactly one outcome on SQLite and PostgreSQL alike; the
loser gets a :class:`~jitgate.errors.Conflict`. Each transition is written with its
admin-audit event in the same transaction.

A grant is active from ``starts_at`` until ``ends_at``, its ``max_uses``, the completion
of its ``task_id``, or an early revoke — whichever comes first. A *statement* grant
(one-time approval of one exact statement) has ``max_uses = 1`` and is consumed with a
conditional ``UPDATE … SET uses = uses + 1 WHERE uses < max_uses``: it runs exactly once.
For an *access* grant a use is a session: each session that connects under it takes one
(:meth:`AccessService.use_access_grant`, the same conditional update); once all are
taken no new session starts under it, while the sessions that took them go on until the
grant ends.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from jitgate.access.events import AccessEvents, GrantsChanged, RequestDecided
from jitgate.access.rules import ApprovalRule, Step, pick_rule
from jitgate.audit.log import AuditEvent, AuditLog
from jitgate.connections.registry import ConnectionRegistry
from jitgate.errors import Conflict, Forbidden, InvalidInput, NotFound
from jitgate.identity.principal import Authenticated, Identity, Role
from jitgate.policy.risk import RiskSettings, is_business_hours
from jitgate.store import revisions
from jitgate.store.db import Store
from jitgate.store.models import (
    AccessRequestRow,
    ApprovalRow,
    ApprovalRuleRow,
    GrantRow,
    utcnow,
)

log = logging.getLogger("jitgate.access")

REVISION = "grants"
KINDS = ("access", "statement", "break_glass")


_Paged = TypeVar("_Paged", AccessRequestRow, GrantRow)


def _newest_first(session: Session, model: type[_Paged], after: str | None) -> Select[_Paged]:
    """Rows newest first, from after the row ``after`` (a keyset page: stable under inserts)."""
    stmt = select(model).order_by(model.created_at.desc(), model.id.desc())
    if after is None:
        return stmt
    anchor = session.get(model, after)
    if anchor is None:
        raise InvalidInput("cursor is not valid")
    return stmt.where(
        or_(
            model.created_at < anchor.created_at,
            and_(model.created_at == anchor.created_at, model.id < anchor.id),
        )
    )


def statement_key(text: str, params: Sequence[bytes | None] = ()) -> str:
    """Identity of one exact statement (text and parameter values) for one-time approval."""
    digest = hashlib.sha256(text.strip().encode("utf-8", "surrogatepass"))
    for param in params:
        digest.update(b"\x00" if param is None else b"\x01" + len(param).to_bytes(4, "big"))
        if param is not None:
            digest.update(param)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ApprovalInfo:
    approver: str
    step: int
    decision: str
    comment: str | None
    via: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RequestInfo:
    id: str
    kind: str
    status: str
    requester: str
    actor: str | None
    connection: str
    scope: tuple[str, ...] | None
    duration_seconds: int
    max_uses: int | None
    reason: str
    ticket: str | None
    task_id: str | None
    statement: str | None
    rule: str | None
    steps: tuple[Step, ...]
    current_step: int
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    grant_id: str | None
    approvals: tuple[ApprovalInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class GrantInfo:
    id: str
    kind: str
    identity: str
    actor: str | None
    connection: str
    scope: tuple[str, ...] | None
    statement_key: str | None
    starts_at: datetime
    ends_at: datetime
    max_uses: int | None
    uses: int
    task_id: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    request_id: str | None

    def active_at(self, now: datetime) -> bool:
        return (
            self.revoked_at is None
            and self.starts_at <= now < self.ends_at
            and (self.max_uses is None or self.uses < self.max_uses)
        )

    @property
    def active(self) -> bool:
        return self.active_at(utcnow())


@dataclass(frozen=True, slots=True)
class TaskCompletion:
    task_id: str
    grants: tuple[GrantInfo, ...]  # revoked by the completion
    cancelled_requests: tuple[str, ...]  # ids of the pending requests it cancelled


def _grant_info(row: GrantRow) -> GrantInfo:
    return GrantInfo(
        id=row.id,
        kind=row.kind,
        identity=row.identity_name,
        actor=row.actor_name,
        connection=row.connection_name,
        scope=tuple(row.scope) if row.scope else None,
        statement_key=row.statement_key,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        max_uses=row.max_uses,
        uses=row.uses,
        task_id=row.task_id,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        request_id=row.request_id,
    )


def _rule_from_row(row: ApprovalRuleRow) -> ApprovalRule:
    return ApprovalRule(
        name=row.name,
        steps=tuple(Step.from_json(s) for s in row.steps) or (Step(),),
        priority=row.priority,
        connections=tuple(row.connections) if row.connections else None,
        tags=dict(row.tags) if row.tags else None,
        allow_self_approval=row.allow_self_approval,
        auto_approve_groups=tuple(row.auto_approve_groups or ()),
        auto_approve_business_hours_only=row.auto_approve_business_hours_only,
        max_duration_seconds=row.max_duration_seconds,
        max_uses=row.max_uses,
        pending_expiry_seconds=row.pending_expiry_seconds,
        allow_break_glass=row.allow_break_glass,
    )


class AccessService:
    def __init__(
        self,
        store: Store,
        connections: ConnectionRegistry,
        *,
        events: AccessEvents | None = None,
        notifier: Any = None,
        risk: RiskSettings | None = None,
    ) -> None:
        self.store = store
        self.connections = connections
        self.events = events or AccessEvents()
        self.notifier = notifier
        self.risk = risk or RiskSettings()

    # ------------------------------------------------------------------ rules

    def rules(self) -> list[ApprovalRule]:
        with self.store.session() as session:
            return [_rule_from_row(r) for r in session.scalars(select(ApprovalRuleRow))]

    def put_rule(
        self,
        rule: ApprovalRule,
        *,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> ApprovalRule:
        if rule.max_duration_seconds < 60 or rule.pending_expiry_seconds < 10:
            raise InvalidInput("max_duration_seconds ≥ 60 and pending_expiry_seconds ≥ 10")
        if not rule.steps:
            raise InvalidInput("a rule needs at least one step")
        with self.store.session() as session:
            row = session.scalar(select(ApprovalRuleRow).where(ApprovalRuleRow.name == rule.name))
            if row is None:
                row = ApprovalRuleRow(id=str(uuid.uuid4()), name=rule.name, steps=[])
                session.add(row)
            row.priority = rule.priority
            row.connections = list(rule.connections) if rule.connections else None
            row.tags = dict(rule.tags) if rule.tags else None
            row.steps = [s.to_json() for s in rule.steps]
            row.allow_self_approval = rule.allow_self_approval
            row.auto_approve_groups = list(rule.auto_approve_groups) or None
            row.auto_approve_business_hours_only = rule.auto_approve_business_hours_only
            row.max_duration_seconds = rule.max_duration_seconds
            row.max_uses = rule.max_uses
            row.pending_expiry_seconds = rule.pending_expiry_seconds
            row.allow_break_glass = rule.allow_break_glass
            AuditLog.record(
                session,
                "approval_rule:put",
                caller=caller,
                target_type="approval_rule",
                target_name=rule.name,
                details={"steps": row.steps, "priority": rule.priority},
                client_addr=client_addr,
            )
        return rule

    def delete_rule(self, name: str, *, caller: Authenticated | None = None) -> None:
        with self.store.session() as session:
            row = session.scalar(select(ApprovalRuleRow).where(ApprovalRuleRow.name == name))
            if row is None:
                raise NotFound(f"no approval rule named {name[:128]!r}")
            session.delete(row)
            AuditLog.record(
                session,
                "approval_rule:delete",
                caller=caller,
                target_type="approval_rule",
                target_name=name,
            )

    def rule_for(self, connection: str) -> tuple[ApprovalRule, dict[str, str]]:
        info = self.connections.get(connection)
        return pick_rule(self.rules(), info.name, info.tags), info.tags

    # --------------------------------------------------------------- requests

    def create_request(
        self,
        caller: Authenticated,
        connection: str,
        *,
        reason: str,
        kind: str = "access",
        duration: timedelta = timedelta(hours=1),
        ticket: str | None = None,
        scope: Sequence[str] | None = None,
        task_id: str | None = None,
        max_uses: int | None = None,
        statement_text: str | None = None,
        statement_key: str | None = None,
        session_id: str | None = None,
        client_addr: str | None = None,
        pending_for: timedelta | None = None,
        now: datetime | None = None,
    ) -> RequestInfo:
        """Create an access request (or a statement request) and notify approvers.

        ``pending_for`` shortens how long it may wait for a decision (below the rule's
        pending expiry): a statement held in a session is decided while it waits or not
        at all, so a gateway that dies mid-wait leaves nothing approvable behind.
        """
        now = now or utcnow()
        if kind not in ("access", "statement"):
            raise InvalidInput(f"unknown request kind {kind!r}")
        if not reason or not reason.strip():
            raise InvalidInput("a reason is required")
        rule, _tags = self.rule_for(connection)
        seconds = int(duration.total_seconds())
        if kind == "statement":
            if not statement_key:
                raise InvalidInput("a statement request needs the statement")
            max_uses, seconds = 1, min(max(seconds, 60), rule.max_duration_seconds)
        if seconds < 60:
            raise InvalidInput("the duration must be at least 60 seconds")
        if seconds > rule.max_duration_seconds:
            raise InvalidInput(
                f"the duration exceeds the maximum of {rule.max_duration_seconds} s "
                f"set by approval rule {rule.name!r}"
            )
        if rule.max_uses is not None and (max_uses is None or max_uses > rule.max_uses):
            max_uses = rule.max_uses
        request_id = str(uuid.uuid4())
        with self.store.session() as session:
            if task_id is not None and self._task_completed(session, task_id) is not None:
                raise Conflict(f"task {task_id!r} is completed: it can get no more access")
            row = AccessRequestRow(
                id=request_id,
                kind=kind,
                status="pending",
                requester_id=caller.principal.id,
                requester_name=caller.principal.name,
                actor_id=caller.actor.id if caller.actor else None,
                actor_name=caller.actor.name if caller.actor else None,
                connection_name=connection,
                scope=list(scope) if scope else None,
                duration_seconds=seconds,
                max_uses=max_uses,
                reason=reason.strip()[:4000],
                ticket=ticket,
                task_id=task_id,
                statement_text=statement_text,
                statement_key=statement_key,
                session_id=session_id,
                rule_name=rule.name,
                steps=[s.to_json() for s in rule.steps],
                current_step=0,
                created_at=now,
                expires_at=now
                + min(
                    timedelta(seconds=rule.pending_expiry_seconds),
                    pending_for or timedelta.max - timedelta(days=1),
                ),
            )
            session.add(row)
            AuditLog.record(
                session,
                "request:create",
                caller=caller,
                target_type="request",
                target_name=request_id,
                details={
                    "kind": kind,
                    "connection": connection,
                    "duration_seconds": seconds,
                    "reason": row.reason,
                    "ticket": ticket,
                    "task_id": task_id,
                    "rule": rule.name,
                },
                client_addr=client_addr,
            )
            session.flush()
            auto = self._auto_approves(rule, caller.principal, now)
            if auto:
                comment = f"auto-approved by rule {rule.name!r}"
                groups = sorted(caller.principal.groups.intersection(rule.auto_approve_groups))
                # In the audit trail like a human approval, by the gateway (no caller),
                # with why: the rule and the requester's groups that matched it.
                AuditLog.record(
                    session,
                    "request:approve",
                    caller=None,
                    target_type="request",
                    target_name=request_id,
                    details={
                        "step": row.current_step,
                        "comment": comment,
                        "via": "auto",
                        "rule": rule.name,
                        "requester": caller.principal.name,
                        "matched_groups": groups,
                        "business_hours_only": rule.auto_approve_business_hours_only,
                    },
                    client_addr=client_addr,
                )
                self._approve_all(
                    session,
                    row,
                    approver=caller.principal,
                    via="auto",
                    comment=comment,
                    now=now,
                )
            info = self._request_info(session, row)
        if info.status == "approved":
            self._after_decision(info)
        elif self.notifier is not None:
            self.notifier.request_created(info)
        return info

    def _auto_approves(self, rule: ApprovalRule, requester: Identity, now: datetime) -> bool:
        if not rule.auto_approve_groups:
            return False
        if not requester.groups.intersection(rule.auto_approve_groups):
            return False
        return not rule.auto_approve_business_hours_only or is_business_hours(now, self.risk)

    def approve(
        self,
        caller: Authenticated,
        request_id: str,
        *,
        comment: str | None = None,
        via: str = "api",
        client_addr: str | None = None,
        now: datetime | None = None,
    ) -> RequestInfo:
        now = now or utcnow()
        with self.store.session() as session:
            row = self._pending(session, request_id, now)
            steps = [Step.from_json(s) for s in row.steps]
            step = steps[row.current_step]
            approver = caller.actor or caller.principal
            if caller.actor is not None:
                raise Forbidden("agents cannot approve requests")
            self._check_approver(row, step, approver)
            if (
                session.scalar(
                    select(ApprovalRow.id).where(
                        ApprovalRow.request_id == row.id, ApprovalRow.approver_id == approver.id
                    )
                )
                is not None
            ):
                raise Conflict("you have already decided on this request")
            session.add(
                ApprovalRow(
                    request_id=row.id,
                    step=row.current_step,
                    approver_id=approver.id,
                    approver_name=approver.name,
                    decision="approve",
                    comment=comment,
                    via=via,
                    at=now,
                )
            )
            session.flush()
            count = (
                session.scalar(
                    select(func.count())
                    .select_from(ApprovalRow)
                    .where(
                        ApprovalRow.request_id == row.id,
                        ApprovalRow.step == row.current_step,
                        ApprovalRow.decision == "approve",
                    )
                )
                or 0
            )
            AuditLog.record(
                session,
                "request:approve",
                caller=caller,
                target_type="request",
                target_name=row.id,
                details={
                    "step": row.current_step,
                    "comment": comment,
                    "via": via,
                    "approvals": count,
                    "needed": step.min_approvals,
                },
                client_addr=client_addr,
            )
            if count >= step.min_approvals:
                if row.current_step + 1 < len(steps):
                    self._advance(session, row)
                else:
                    self._finalize(session, row, "approved", approver.name, comment, now)
            info = self._request_info(session, row)
        if info.status == "approved":
            self._after_decision(info)
        return info

    def _check_approver(self, row: AccessRequestRow, step: Step, approver: Identity) -> None:
        rule_self = False
        for rule in self.rules():
            if rule.name == row.rule_name:
                rule_self = rule.allow_self_approval
        if approver.id == row.requester_id and not rule_self:
            raise Forbidden("you cannot approve your own request")
        if row.actor_id is not None and approver.id == row.actor_id:
            raise Forbidden("the agent that asked cannot approve its own request")
        if not step.admits(approver):
            groups = ", ".join(step.groups) or "approvers"
            raise Forbidden(f"only members of {groups} can approve this step")

    def _advance(self, session: Session, row: AccessRequestRow) -> None:
        result = session.execute(
            update(AccessRequestRow)
            .where(
                AccessRequestRow.id == row.id,
                AccessRequestRow.status == "pending",
                AccessRequestRow.current_step == row.current_step,
            )
            .values(current_step=row.current_step + 1)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise Conflict("the request changed while you were deciding; try again")
        session.refresh(row)

    def _finalize(
        self,
        session: Session,
        row: AccessRequestRow,
        status: str,
        by: str,
        reason: str | None,
        now: datetime,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "decided_at": now,
            "decided_by": by,
            "decision_reason": reason,
        }
        grant_id = None
        if status == "approved":
            grant_id = str(uuid.uuid4())
            values["grant_id"] = grant_id
        result = session.execute(
            update(AccessRequestRow)
            .where(
                AccessRequestRow.id == row.id,
                AccessRequestRow.status == "pending",
                AccessRequestRow.current_step == row.current_step,
            )
            .values(**values)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise Conflict("the request was already decided")
        if grant_id is not None:
            session.add(
                GrantRow(
                    id=grant_id,
                    request_id=row.id,
                    kind=row.kind,
                    identity_id=row.requester_id,
                    identity_name=row.requester_name,
                    actor_name=row.actor_name,
                    connection_name=row.connection_name,
                    scope=row.scope,
                    statement_key=row.statement_key,
                    starts_at=now,
                    ends_at=now + timedelta(seconds=row.duration_seconds),
                    max_uses=row.max_uses,
                    uses=0,
                    task_id=row.task_id,
                    created_at=now,
                )
            )
            revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "grant:create",
                caller=None,
                target_type="grant",
                target_name=grant_id,
                details={
                    "request": row.id,
                    "identity": row.requester_name,
                    "connection": row.connection_name,
                    "kind": row.kind,
                    "ends_at": str(now + timedelta(seconds=row.duration_seconds)),
                },
            )
        session.refresh(row)

    def _approve_all(
        self,
        session: Session,
        row: AccessRequestRow,
        *,
        approver: Identity,
        via: str,
        comment: str,
        now: datetime,
    ) -> None:
        session.add(
            ApprovalRow(
                request_id=row.id,
                step=row.current_step,
                approver_id=approver.id,
                approver_name=approver.name,
                decision="approve",
                comment=comment,
                via=via,
                at=now,
            )
        )
        row.current_step = max(0, len(row.steps) - 1)
        session.flush()
        self._finalize(session, row, "approved", f"{approver.name} ({via})", comment, now)

    def deny(
        self,
        caller: Authenticated,
        request_id: str,
        *,
        reason: str | None = None,
        via: str = "api",
        client_addr: str | None = None,
        now: datetime | None = None,
    ) -> RequestInfo:
        now = now or utcnow()
        with self.store.session() as session:
            row = self._pending(session, request_id, now)
            approver = caller.principal
            if caller.actor is not None:
                raise Forbidden("agents cannot deny requests")
            step = Step.from_json(row.steps[row.current_step])
            if approver.id == row.requester_id:
                raise Forbidden("cancel your own request instead of denying it")
            if not step.admits(approver):
                raise Forbidden("only an approver of the current step can deny it")
            session.add(
                ApprovalRow(
                    request_id=row.id,
                    step=row.current_step,
                    approver_id=approver.id,
                    approver_name=approver.name,
                    decision="deny",
                    comment=reason,
                    via=via,
                    at=now,
                )
            )
            session.flush()
            self._finalize(session, row, "denied", approver.name, reason, now)
            AuditLog.record(
                session,
                "request:deny",
                caller=caller,
                target_type="request",
                target_name=row.id,
                details={"reason": reason, "via": via},
                client_addr=client_addr,
            )
            info = self._request_info(session, row)
        self._after_decision(info)
        return info

    def cancel(self, caller: Authenticated, request_id: str) -> RequestInfo:
        now = utcnow()
        with self.store.session() as session:
            # Withdrawing needs no decision time left (a held statement's request ends
            # when its wait does, and is withdrawn right then).
            row = self._pending(session, request_id, now, expired_ok=True)
            if row.requester_id != caller.principal.id and not caller.has_role(Role.ADMIN):
                raise Forbidden("only the requester or an admin can cancel a request")
            self._finalize(session, row, "cancelled", caller.principal.name, None, now)
            AuditLog.record(
                session, "request:cancel", caller=caller, target_type="request", target_name=row.id
            )
            info = self._request_info(session, row)
        self._after_decision(info)
        return info

    def withdraw_interrupted(self, session_ids: Collection[str]) -> list[str]:
        """Withdraw the pending statement requests of sessions a stopped gateway left open.

        Their statements never ran and cannot run any more (the session is gone), so no
        one may approve them after the restart; the statement sent again asks anew.
        """
        if not session_ids:
            return []
        now = utcnow()
        withdrawn: list[str] = []
        with self.store.session() as session:
            rows = session.scalars(
                select(AccessRequestRow).where(
                    AccessRequestRow.kind == "statement",
                    AccessRequestRow.status == "pending",
                    AccessRequestRow.session_id.in_(list(session_ids)),
                )
            ).all()
            for row in rows:
                try:
                    self._finalize(session, row, "cancelled", "jitgate", "the gateway stopped", now)
                except Conflict:  # decided meanwhile
                    continue
                AuditLog.record(
                    session,
                    "request:cancel",
                    caller=None,
                    target_type="request",
                    target_name=row.id,
                    details={"reason": "the gateway stopped while the statement was held"},
                )
                withdrawn.append(row.id)
        for request_id in withdrawn:
            self.events.request_decided(RequestDecided(request_id, "cancelled"))
        if withdrawn:
            log.warning(
                "withdrew %d held statement requests of interrupted sessions", len(withdrawn)
            )
        return withdrawn

    def _pending(
        self, session: Session, request_id: str, now: datetime, *, expired_ok: bool = False
    ) -> AccessRequestRow:
        """The request, locked for this transaction, if it can still be decided.

        The row lock (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time)
        makes concurrent decisions on one request take turns: the second approver of a
        2-of-M step counts the first one's approval instead of only its own.
        """
        row = session.get(AccessRequestRow, request_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no request {request_id[:40]!r}")
        if row.status != "pending":
            raise Conflict(f"the request is already {row.status}")
        if row.expires_at <= now and not expired_ok:
            raise Conflict("the request has expired")
        return row

    def _after_decision(self, info: RequestInfo) -> None:
        self.events.request_decided(RequestDecided(info.id, info.status))
        if info.status == "approved":
            self.events.grants_changed(GrantsChanged(info.requester, info.connection))
        if self.notifier is not None:
            self.notifier.request_decided(info)

    def get_request(self, request_id: str) -> RequestInfo:
        with self.store.session() as session:
            row = session.get(AccessRequestRow, request_id)
            if row is None:
                raise NotFound(f"no request {request_id[:40]!r}")
            return self._request_info(session, row)

    def list_requests(
        self,
        *,
        status: str | None = None,
        requester: str | None = None,
        connection: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[RequestInfo]:
        """Requests, newest first; ``after`` is the id of the last one of the page before."""
        with self.store.session() as session:
            stmt = _newest_first(session, AccessRequestRow, after).limit(limit)
            if status:
                stmt = stmt.where(AccessRequestRow.status == status)
            if requester:
                stmt = stmt.where(AccessRequestRow.requester_name == requester)
            if connection:
                stmt = stmt.where(AccessRequestRow.connection_name == connection)
            return [self._request_info(session, r) for r in session.scalars(stmt)]

    @staticmethod
    def _request_info(session: Session, row: AccessRequestRow) -> RequestInfo:
        approvals = tuple(
            ApprovalInfo(a.approver_name, a.step, a.decision, a.comment, a.via, a.at)
            for a in session.scalars(
                select(ApprovalRow).where(ApprovalRow.request_id == row.id).order_by(ApprovalRow.id)
            )
        )
        return RequestInfo(
            id=row.id,
            kind=row.kind,
            status=row.status,
            requester=row.requester_name,
            actor=row.actor_name,
            connection=row.connection_name,
            scope=tuple(row.scope) if row.scope else None,
            duration_seconds=row.duration_seconds,
            max_uses=row.max_uses,
            reason=row.reason,
            ticket=row.ticket,
            task_id=row.task_id,
            statement=row.statement_text,
            rule=row.rule_name,
            steps=tuple(Step.from_json(s) for s in row.steps),
            current_step=row.current_step,
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
            decision_reason=row.decision_reason,
            grant_id=row.grant_id,
            approvals=approvals,
        )

    # ------------------------------------------------------------ break glass

    def break_glass(
        self,
        caller: Authenticated,
        connection: str,
        *,
        reason: str,
        duration: timedelta,
        client_addr: str | None = None,
    ) -> GrantInfo:
        if not reason or len(reason.strip()) < 10:
            raise InvalidInput("break-glass access needs a reason of at least 10 characters")
        rule, _tags = self.rule_for(connection)
        if not rule.allow_break_glass:
            raise Forbidden(f"approval rule {rule.name!r} does not allow break-glass access")
        seconds = int(duration.total_seconds())
        if not 60 <= seconds <= rule.max_duration_seconds:
            raise InvalidInput(f"duration must be between 60 and {rule.max_duration_seconds} s")
        now = utcnow()
        request_id, grant_id = str(uuid.uuid4()), str(uuid.uuid4())
        with self.store.session() as session:
            session.add(
                AccessRequestRow(
                    id=request_id,
                    kind="break_glass",
                    status="approved",
                    requester_id=caller.principal.id,
                    requester_name=caller.principal.name,
                    actor_id=caller.actor.id if caller.actor else None,
                    actor_name=caller.actor.name if caller.actor else None,
                    connection_name=connection,
                    duration_seconds=seconds,
                    reason=reason.strip(),
                    rule_name=rule.name,
                    steps=[],
                    current_step=0,
                    created_at=now,
                    expires_at=now,
                    decided_at=now,
                    decided_by=f"{caller.principal.name} (break-glass)",
                    grant_id=grant_id,
                )
            )
            session.add(
                GrantRow(
                    id=grant_id,
                    request_id=request_id,
                    kind="break_glass",
                    identity_id=caller.principal.id,
                    identity_name=caller.principal.name,
                    actor_name=caller.actor.name if caller.actor else None,
                    connection_name=connection,
                    starts_at=now,
                    ends_at=now + timedelta(seconds=seconds),
                    uses=0,
                    created_at=now,
                )
            )
            revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "grant:break_glass",
                caller=caller,
                target_type="grant",
                target_name=grant_id,
                details={
                    "connection": connection,
                    "reason": reason.strip(),
                    "duration_seconds": seconds,
                    "flagged": True,
                },
                client_addr=client_addr,
            )
            session.flush()
            grant = _grant_info(session.get(GrantRow, grant_id))  # type: ignore[arg-type]
        log.warning(
            "BREAK-GLASS: %s took access to %s for %d s: %s",
            caller.display,
            connection,
            seconds,
            reason.strip(),
        )
        self.events.grants_changed(GrantsChanged(caller.principal.name, connection))
        if self.notifier is not None:
            self.notifier.break_glass(grant, reason.strip())
        return grant

    # ------------------------------------------------------------------ grants

    def list_grants(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        active_only: bool = True,
        limit: int = 200,
        after: str | None = None,
    ) -> list[GrantInfo]:
        """Grants, newest first; ``after`` is the id of the last one of the page before."""
        now = utcnow()
        with self.store.session() as session:
            stmt = _newest_first(session, GrantRow, after).limit(limit)
            if identity:
                stmt = stmt.where(GrantRow.identity_name == identity)
            if connection:
                stmt = stmt.where(GrantRow.connection_name == connection)
            if active_only:  # GrantInfo.active_at, in SQL, so that pages stay full
                stmt = stmt.where(
                    GrantRow.revoked_at.is_(None),
                    GrantRow.starts_at <= now,
                    GrantRow.ends_at > now,
                    or_(GrantRow.max_uses.is_(None), GrantRow.uses < GrantRow.max_uses),
                )
            return [_grant_info(r) for r in session.scalars(stmt)]

    def get_grant(self, grant_id: str) -> GrantInfo:
        with self.store.session() as session:
            row = session.get(GrantRow, grant_id)
            if row is None:
                raise NotFound(f"no grant {grant_id[:40]!r}")
            return _grant_info(row)

    def active_grants(
        self,
        principal: Identity,
        actor: Identity | None,
        connection: str,
        *,
        now: datetime | None = None,
        used: Collection[str] = (),
    ) -> list[GrantInfo]:
        """Access grants (not one-time statement grants) this caller holds right now.

        ``used`` names grants a session took a use of when it connected: they stay active
        for that session after their last use, until they end or are revoked.
        """
        now = now or utcnow()
        with self.store.session() as session:
            rows = session.scalars(
                select(GrantRow).where(
                    GrantRow.identity_id == principal.id,
                    GrantRow.connection_name == connection,
                    GrantRow.kind != "statement",
                    GrantRow.revoked_at.is_(None),
                    GrantRow.ends_at > now,
                )
            )
            grants = [_grant_info(r) for r in rows]
        actor_name = actor.name if actor else None
        return [
            g
            for g in grants
            if g.actor in (None, actor_name)
            and (g.active_at(now) or (g.id in used and g.starts_at <= now < g.ends_at))
        ]

    def use_access_grant(
        self, principal: Identity, actor: Identity | None, connection: str
    ) -> GrantInfo | None:
        """Count a new session against the caller's access grants for ``connection``.

        A grant without ``max_uses`` needs no counting and is returned as is. Otherwise
        one use of the limited grant that ends first is taken with a conditional update,
        so concurrent sessions never take more uses than there are. ``None``: no grant
        (left).
        """
        now = utcnow()
        grants = sorted(
            self.active_grants(principal, actor, connection, now=now), key=lambda g: g.ends_at
        )
        unlimited = [g for g in grants if g.max_uses is None]
        if unlimited:
            return unlimited[0]
        with self.store.session() as session:
            for grant in grants:
                result = session.execute(
                    update(GrantRow)
                    .where(
                        GrantRow.id == grant.id,
                        GrantRow.revoked_at.is_(None),
                        GrantRow.uses < GrantRow.max_uses,
                    )
                    .values(uses=GrantRow.uses + 1)
                )
                if getattr(result, "rowcount", 0) == 1:
                    row = session.get(GrantRow, grant.id)
                    assert row is not None
                    session.refresh(row)
                    AuditLog.record(
                        session,
                        "grant:use",
                        caller=None,
                        target_type="grant",
                        target_name=row.id,
                        details={"uses": row.uses, "max_uses": row.max_uses},
                    )
                    return _grant_info(row)
        return None

    def consume_statement_grant(
        self, principal: Identity, actor: Identity | None, connection: str, key: str
    ) -> GrantInfo | None:
        """Use an approved one-time statement grant, if there is one; exactly once."""
        now = utcnow()
        with self.store.session() as session:
            candidates = session.scalars(
                select(GrantRow).where(
                    GrantRow.identity_id == principal.id,
                    GrantRow.connection_name == connection,
                    GrantRow.kind == "statement",
                    GrantRow.statement_key == key,
                    GrantRow.revoked_at.is_(None),
                    GrantRow.ends_at > now,
                )
            ).all()
            for row in candidates:
                if row.actor_name not in (None, actor.name if actor else None):
                    continue
                result = session.execute(
                    update(GrantRow)
                    .where(
                        GrantRow.id == row.id,
                        GrantRow.revoked_at.is_(None),
                        (GrantRow.max_uses.is_(None)) | (GrantRow.uses < GrantRow.max_uses),
                    )
                    .values(uses=GrantRow.uses + 1)
                )
                if getattr(result, "rowcount", 0) == 1:
                    session.refresh(row)
                    AuditLog.record(
                        session,
                        "grant:use",
                        caller=None,
                        target_type="grant",
                        target_name=row.id,
                        details={"uses": row.uses},
                    )
                    revisions.bump(session, REVISION)
                    return _grant_info(row)
        return None

    def revoke_grant(
        self,
        caller: Authenticated | None,
        grant_id: str,
        *,
        reason: str = "revoked",
        client_addr: str | None = None,
    ) -> GrantInfo:
        now = utcnow()
        with self.store.session() as session:
            row = session.get(GrantRow, grant_id)
            if row is None:
                raise NotFound(f"no grant {grant_id[:40]!r}")
            if caller is not None and not (
                caller.has_role(Role.APPROVER) or row.identity_id == caller.principal.id
            ):
                raise Forbidden("only approvers, admins or the holder can revoke a grant")
            if row.revoked_at is None:
                row.revoked_at = now
                row.revoked_by = caller.principal.name if caller else "jitgate"
                row.revoke_reason = reason[:256]
                revisions.bump(session, REVISION)
                AuditLog.record(
                    session,
                    "grant:revoke",
                    caller=caller,
                    target_type="grant",
                    target_name=row.id,
                    details={"reason": reason},
                    client_addr=client_addr,
                )
            info = _grant_info(row)
        self.events.grants_changed(GrantsChanged(info.identity, info.connection, (info.id,)))
        return info

    def complete_task(
        self,
        caller: Authenticated,
        task_id: str,
        *,
        client_addr: str | None = None,
        now: datetime | None = None,
    ) -> TaskCompletion:
        """The agent task grants and requests were for is done.

        Its active grants are revoked now (sessions that depend on them are ended, with a
        message that names the task), its pending requests are cancelled (a statement
        held for one of them is refused at once), and the task stays completed: completing
        it again, or asking for access for it, is refused. Only the task's owner (the
        identity its grants and requests are for) or an admin may complete it.
        """
        now = now or utcnow()
        if not task_id or len(task_id) > 256:
            raise InvalidInput("a task id of 1 to 256 characters is required")
        with self.store.session() as session:
            self._lock_task(session, task_id)
            done = self._task_completed(session, task_id)
            if done is not None:
                raise Conflict(
                    f"task {task_id!r} was already completed at "
                    f"{done.at.isoformat(timespec='seconds')} by {done.actor or 'jitgate'}"
                )
            grants = session.scalars(select(GrantRow).where(GrantRow.task_id == task_id)).all()
            requests = session.scalars(
                select(AccessRequestRow).where(AccessRequestRow.task_id == task_id)
            ).all()
            if not grants and not requests:
                raise NotFound(f"no grant or request is for task {task_id[:256]!r}")
            owners = {g.identity_id for g in grants} | {r.requester_id for r in requests}
            if owners != {caller.principal.id} and not caller.has_role(Role.ADMIN):
                raise Forbidden("only the task's owner or an admin can complete it")
            ended = []
            for row in grants:
                if row.revoked_at is None:
                    row.revoked_at = now
                    row.revoked_by = caller.principal.name
                    row.revoke_reason = "task completed"
                    ended.append(_grant_info(row))
            cancelled = []
            for request in requests:
                if request.status != "pending":
                    continue
                try:
                    self._finalize(
                        session,
                        request,
                        "cancelled",
                        caller.principal.name,
                        f"task {task_id} completed",
                        now,
                    )
                except Conflict:  # decided meanwhile
                    continue
                cancelled.append(self._request_info(session, request))
            if ended:
                revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "task:complete",
                caller=caller,
                target_type="task",
                target_name=task_id,
                details={
                    "grants": [g.id for g in ended],
                    "cancelled_requests": [r.id for r in cancelled],
                },
                client_addr=client_addr,
            )
        for grant in ended:
            self.events.grants_changed(GrantsChanged(grant.identity, grant.connection, (grant.id,)))
        for info in cancelled:
            self._after_decision(info)
        return TaskCompletion(task_id, tuple(ended), tuple(r.id for r in cancelled))

    @staticmethod
    def _lock_task(session: Session, task_id: str) -> None:
        """Make concurrent completions of one task take turns: the task's grant and request
        rows are locked (by a write that changes nothing) before the "already completed"
        check, so a second completion waits for the first to commit and then sees it. On
        SQLite the write takes the database's write lock, with the same effect."""
        for table in (GrantRow, AccessRequestRow):
            session.execute(
                update(table).where(table.task_id == task_id).values(task_id=table.task_id)
            )

    @staticmethod
    def _task_completed(session: Session, task_id: str) -> AuditEvent | None:
        """When and by whom a task was completed (the audit trail is the record)."""
        events = AuditLog.query(session, action="task:complete", target_name=task_id, limit=1)
        return events[0] if events else None

    # ----------------------------------------------------------- housekeeping

    def expire_due(self, now: datetime | None = None) -> tuple[list[GrantInfo], list[str]]:
        """Close grants past their end or uses and requests past their pending expiry."""
        now = now or utcnow()
        ended: list[GrantInfo] = []
        expired_requests: list[str] = []
        with self.store.session() as session:
            for row in session.scalars(
                select(GrantRow).where(
                    GrantRow.revoked_at.is_(None),
                    (GrantRow.ends_at <= now)
                    | (
                        # A used-up access grant still covers the sessions that used it
                        # until it ends; a used-up statement grant has nothing left to do.
                        (GrantRow.kind == "statement")
                        & GrantRow.max_uses.is_not(None)
                        & (GrantRow.uses >= GrantRow.max_uses)
                    ),
                )
            ):
                row.revoked_at = min(now, row.ends_at)
                row.revoked_by = "jitgate"
                row.revoke_reason = "expired" if row.ends_at <= now else "used up"
                ended.append(_grant_info(row))
                AuditLog.record(
                    session,
                    "grant:end",
                    caller=None,
                    target_type="grant",
                    target_name=row.id,
                    details={"reason": row.revoke_reason},
                )
            for request in session.scalars(
                select(AccessRequestRow).where(
                    AccessRequestRow.status == "pending", AccessRequestRow.expires_at <= now
                )
            ):
                result = session.execute(
                    update(AccessRequestRow)
                    .where(AccessRequestRow.id == request.id, AccessRequestRow.status == "pending")
                    .values(
                        status="expired",
                        decided_at=now,
                        decided_by="jitgate",
                        decision_reason="nobody decided in time",
                    )
                )
                if getattr(result, "rowcount", 0) == 1:
                    expired_requests.append(request.id)
                    AuditLog.record(
                        session,
                        "request:expire",
                        caller=None,
                        target_type="request",
                        target_name=request.id,
                    )
            if ended:
                revisions.bump(session, REVISION)
        for grant in ended:
            self.events.grants_changed(GrantsChanged(grant.identity, grant.connection, (grant.id,)))
        for request_id in expired_requests:
            self.events.request_decided(RequestDecided(request_id, "expired"))
        return ended, expired_requests

    def next_deadline(self) -> datetime | None:
        """The earliest moment a grant ends or a pending request expires."""
        with self.store.session() as session:
            grant_end = session.scalar(
                select(func.min(GrantRow.ends_at)).where(GrantRow.revoked_at.is_(None))
            )
            request_end = session.scalar(
                select(func.min(AccessRequestRow.expires_at)).where(
                    AccessRequestRow.status == "pending"
                )
            )
        candidates = [d for d in (grant_end, request_end) if d is not None]
        return min(candidates) if candidates else None

    def revision(self) -> int:
        with self.store.session() as session:
            return revisions.current(session, REVISION)
