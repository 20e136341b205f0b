"""Just-in-time access: requests, approvals, grants, approval rules, tasks, break-glass."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from jitgate.access.rules import ApprovalRule, Step
from jitgate.access.service import GrantInfo, RequestInfo
from jitgate.api.deps import Admin, Caller, ClientAddr, GatewayDep, PageDep
from jitgate.api.schemas import PageOut, Strict
from jitgate.errors import Forbidden
from jitgate.identity.principal import Role

router = APIRouter(prefix="/api/v1", tags=["access"])


class RequestIn(Strict):
    connection: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=4000)
    duration_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    ticket: str | None = Field(default=None, max_length=256)
    scope: list[str] | None = Field(default=None, max_length=50)
    task_id: str | None = Field(default=None, max_length=128)
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)


class DecisionIn(Strict):
    comment: str | None = Field(default=None, max_length=4000)


class BreakGlassIn(Strict):
    connection: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=10, max_length=4000)
    duration_seconds: int = Field(default=3600, ge=60, le=86400)


class RevokeIn(Strict):
    reason: str = Field(default="revoked", max_length=256)


class ApprovalOut(BaseModel):
    approver: str
    step: int
    decision: str
    comment: str | None
    via: str
    at: datetime


class StepOut(BaseModel):
    groups: list[str]
    min_approvals: int
    name: str | None = None


class RequestOut(BaseModel):
    id: str
    kind: str
    status: str
    requester: str
    actor: str | None
    connection: str
    scope: list[str] | None
    duration_seconds: int
    max_uses: int | None
    reason: str
    ticket: str | None
    task_id: str | None
    statement: str | None
    rule: str | None
    steps: list[StepOut]
    current_step: int
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    grant_id: str | None
    approvals: list[ApprovalOut]

    @classmethod
    def of(cls, info: RequestInfo) -> RequestOut:
        return cls(
            id=info.id,
            kind=info.kind,
            status=info.status,
            requester=info.requester,
            actor=info.actor,
            connection=info.connection,
            scope=list(info.scope) if info.scope else None,
            duration_seconds=info.duration_seconds,
            max_uses=info.max_uses,
            reason=info.reason,
            ticket=info.ticket,
            task_id=info.task_id,
            statement=info.statement,
            rule=info.rule,
            steps=[
                StepOut(groups=list(s.groups), min_approvals=s.min_approvals, name=s.name)
                for s in info.steps
            ],
            current_step=info.current_step,
            created_at=info.created_at,
            expires_at=info.expires_at,
            decided_at=info.decided_at,
            decided_by=info.decided_by,
            decision_reason=info.decision_reason,
            grant_id=info.grant_id,
            approvals=[
                ApprovalOut(
                    approver=a.approver,
                    step=a.step,
                    decision=a.decision,
                    comment=a.comment,
                    via=a.via,
                    at=a.at,
                )
                for a in info.approvals
            ],
        )


class GrantOut(BaseModel):
    id: str
    kind: str
    identity: str
    actor: str | None
    connection: str
    scope: list[str] | None
    starts_at: datetime
    ends_at: datetime
    max_uses: int | None
    uses: int
    task_id: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    request_id: str | None
    active: bool

    @classmethod
    def of(cls, info: GrantInfo) -> GrantOut:
        return cls(
            id=info.id,
            kind=info.kind,
            identity=info.identity,
            actor=info.actor,
            connection=info.connection,
            scope=list(info.scope) if info.scope else None,
            starts_at=info.starts_at,
            ends_at=info.ends_at,
            max_uses=info.max_uses,
            uses=info.uses,
            task_id=info.task_id,
            revoked_at=info.revoked_at,
            revoked_by=info.revoked_by,
            revoke_reason=info.revoke_reason,
            request_id=info.request_id,
            active=info.active,
        )


class RuleIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    priority: int = Field(default=100, ge=0, le=10000)
    connections: list[str] | None = Field(default=None, max_length=500)
    tags: dict[str, str] | None = None
    steps: list[StepOut] = Field(
        default_factory=lambda: [StepOut(groups=[], min_approvals=1)], min_length=1, max_length=10
    )
    allow_self_approval: bool = False
    auto_approve_groups: list[str] = Field(default_factory=list, max_length=50)
    auto_approve_business_hours_only: bool = False
    max_duration_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    max_uses: int | None = Field(default=None, ge=1)
    pending_expiry_seconds: int = Field(default=3600, ge=10, le=30 * 86400)
    allow_break_glass: bool = True


def _rule_out(rule: ApprovalRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "priority": rule.priority,
        "connections": list(rule.connections) if rule.connections else None,
        "tags": dict(rule.tags) if rule.tags else None,
        "steps": [s.to_json() for s in rule.steps],
        "allow_self_approval": rule.allow_self_approval,
        "auto_approve_groups": list(rule.auto_approve_groups),
        "auto_approve_business_hours_only": rule.auto_approve_business_hours_only,
        "max_duration_seconds": rule.max_duration_seconds,
        "max_uses": rule.max_uses,
        "pending_expiry_seconds": rule.pending_expiry_seconds,
        "allow_break_glass": rule.allow_break_glass,
    }


# ------------------------------------------------------------------ requests


@router.post("/requests", response_model=RequestOut, status_code=status.HTTP_201_CREATED)
def create_request(body: RequestIn, gw: GatewayDep, who: Caller, addr: ClientAddr) -> RequestOut:
    info = gw.access.create_request(
        who,
        body.connection,
        reason=body.reason,
        duration=timedelta(seconds=body.duration_seconds),
        ticket=body.ticket,
        scope=body.scope,
        task_id=body.task_id,
        max_uses=body.max_uses,
        client_addr=addr,
    )
    return RequestOut.of(info)


@router.get("/requests", response_model=PageOut[RequestOut])
def list_requests(
    gw: GatewayDep,
    who: Caller,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    requester: Annotated[str | None, Query(max_length=128)] = None,
    connection: Annotated[str | None, Query(max_length=128)] = None,
    *,
    page: PageDep,
) -> PageOut[RequestOut]:
    privileged = any(who.has_role(r) for r in (Role.APPROVER, Role.AUDITOR))
    if not privileged:
        requester = who.principal.name
    infos = gw.access.list_requests(
        status=status_,
        requester=requester,
        connection=connection,
        limit=page.limit + 1,
        after=page.cursor,
    )
    items = [RequestOut.of(i) for i in infos[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].id if len(infos) > page.limit else None)


@router.get("/requests/{request_id}", response_model=RequestOut)
def get_request(request_id: str, gw: GatewayDep, who: Caller) -> RequestOut:
    info = gw.access.get_request(request_id)
    privileged = any(who.has_role(r) for r in (Role.APPROVER, Role.AUDITOR))
    if not privileged and info.requester != who.principal.name:
        raise Forbidden("you may only see your own requests")
    return RequestOut.of(info)


@router.post("/requests/{request_id}/approve", response_model=RequestOut)
def approve_request(
    request_id: str, body: DecisionIn, gw: GatewayDep, who: Caller, addr: ClientAddr
) -> RequestOut:
    return RequestOut.of(gw.access.approve(who, request_id, comment=body.comment, client_addr=addr))


@router.post("/requests/{request_id}/deny", response_model=RequestOut)
def deny_request(
    request_id: str, body: DecisionIn, gw: GatewayDep, who: Caller, addr: ClientAddr
) -> RequestOut:
    return RequestOut.of(gw.access.deny(who, request_id, reason=body.comment, client_addr=addr))


@router.post("/requests/{request_id}/cancel", response_model=RequestOut)
def cancel_request(request_id: str, gw: GatewayDep, who: Caller) -> RequestOut:
    return RequestOut.of(gw.access.cancel(who, request_id))


@router.post("/break-glass", response_model=GrantOut, status_code=status.HTTP_201_CREATED)
def break_glass(body: BreakGlassIn, gw: GatewayDep, who: Caller, addr: ClientAddr) -> GrantOut:
    grant = gw.access.break_glass(
        who,
        body.connection,
        reason=body.reason,
        duration=timedelta(seconds=body.duration_seconds),
        client_addr=addr,
    )
    return GrantOut.of(grant)


# -------------------------------------------------------------------- grants


@router.get("/grants", response_model=PageOut[GrantOut])
def list_grants(
    gw: GatewayDep,
    who: Caller,
    identity: Annotated[str | None, Query(max_length=128)] = None,
    connection: Annotated[str | None, Query(max_length=128)] = None,
    all: Annotated[bool, Query(description="include ended grants")] = False,
    *,
    page: PageDep,
) -> PageOut[GrantOut]:
    privileged = any(who.has_role(r) for r in (Role.APPROVER, Role.AUDITOR))
    if not privileged:
        identity = who.principal.name
    grants = gw.access.list_grants(
        identity=identity,
        connection=connection,
        active_only=not all,
        limit=page.limit + 1,
        after=page.cursor,
    )
    items = [GrantOut.of(g) for g in grants[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].id if len(grants) > page.limit else None)


@router.get("/grants/{grant_id}", response_model=GrantOut)
def get_grant(grant_id: str, gw: GatewayDep, who: Caller) -> GrantOut:
    grant = gw.access.get_grant(grant_id)
    privileged = any(who.has_role(r) for r in (Role.APPROVER, Role.AUDITOR))
    if not privileged and grant.identity != who.principal.name:
        raise Forbidden("you may only see your own grants")
    return GrantOut.of(grant)


@router.post("/grants/{grant_id}/revoke", response_model=GrantOut)
def revoke_grant(
    grant_id: str, body: RevokeIn, gw: GatewayDep, who: Caller, addr: ClientAddr
) -> GrantOut:
    return GrantOut.of(gw.access.revoke_grant(who, grant_id, reason=body.reason, client_addr=addr))


class TaskCompleteOut(BaseModel):
    task_id: str
    items: list[GrantOut]  # the grants the completion revoked
    cancelled_requests: list[str]


@router.post("/tasks/{task_id}/complete", response_model=TaskCompleteOut)
def complete_task(task_id: str, gw: GatewayDep, who: Caller, addr: ClientAddr) -> TaskCompleteOut:
    """Only the task's owner or an admin; a completed task cannot be completed again (409)."""
    done = gw.access.complete_task(who, task_id, client_addr=addr)
    return TaskCompleteOut(
        task_id=done.task_id,
        items=[GrantOut.of(g) for g in done.grants],
        cancelled_requests=list(done.cancelled_requests),
    )


# --------------------------------------------------------------------- rules


@router.get("/approval-rules")
def list_rules(gw: GatewayDep, _who: Caller) -> dict[str, Any]:
    return {"items": [_rule_out(r) for r in gw.access.rules()]}


@router.put("/approval-rules/{name}")
def put_rule(
    name: str, body: RuleIn, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> dict[str, Any]:
    from jitgate.identity.names import check_simple_name

    check_simple_name(name, "rule name")
    rule = ApprovalRule(
        name=name,
        priority=body.priority,
        connections=tuple(body.connections) if body.connections else None,
        tags=body.tags or None,
        steps=tuple(Step(tuple(s.groups), s.min_approvals, s.name) for s in body.steps),
        allow_self_approval=body.allow_self_approval,
        auto_approve_groups=tuple(body.auto_approve_groups),
        auto_approve_business_hours_only=body.auto_approve_business_hours_only,
        max_duration_seconds=body.max_duration_seconds,
        max_uses=body.max_uses,
        pending_expiry_seconds=body.pending_expiry_seconds,
        allow_break_glass=body.allow_break_glass,
    )
    return _rule_out(gw.access.put_rule(rule, caller=who, client_addr=addr))


@router.delete("/approval-rules/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(name: str, gw: GatewayDep, who: Admin) -> None:
    gw.access.delete_rule(name, caller=who)
