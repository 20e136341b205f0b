"""Policies (Cedar documents): list, add/replace, remove, validate, test (explain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from jitgate.api.deps import Admin, Caller, ClientAddr, GatewayDep
from jitgate.api.schemas import PageOut, Strict
from jitgate.errors import InvalidInput, NotFound
from jitgate.identity.principal import Identity, IdentityKind, Role
from jitgate.policy.cedar import Explanation
from jitgate.policy.service import PolicyRecord
from jitgate.policy.types import Request, Target
from jitgate.sql.postgres import classify_postgres

router = APIRouter(prefix="/api/v1", tags=["policies"])


class PolicyIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=256 * 1024)
    description: str | None = Field(default=None, max_length=1024)
    enabled: bool = True


class PolicyUpdate(Strict):
    text: str = Field(min_length=1, max_length=256 * 1024)
    description: str | None = Field(default=None, max_length=1024)
    enabled: bool = True


class PolicyOut(BaseModel):
    name: str
    text: str
    description: str | None
    enabled: bool
    policies: list[str]
    created_at: datetime
    updated_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, record: PolicyRecord) -> PolicyOut:
        return cls(
            name=record.name,
            text=record.text,
            description=record.description,
            enabled=record.enabled,
            policies=list(record.policies),
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.created_by,
        )


class ValidateIn(Strict):
    name: str = Field(default="candidate", min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=256 * 1024)


class TestIn(Strict):
    """A hypothetical request to evaluate against the current (or a candidate) policy set."""

    user: str = Field(min_length=1, max_length=128)
    actor: str | None = Field(default=None, max_length=128)
    connection: str = Field(min_length=1, max_length=128)
    action: str | None = Field(default=None, max_length=64)
    sql: str | None = Field(default=None, max_length=64 * 1024)
    client_addr: str | None = Field(default=None, max_length=64)
    at: datetime | None = None
    has_grant: bool = False


class MatchedOut(BaseModel):
    name: str
    document: str
    effect: str
    annotations: dict[str, str]


class TestOut(BaseModel):
    outcome: str
    reason: str | None
    mask_profile: str | None
    decided_by: list[str]
    matched: list[MatchedOut]
    errors: list[str]
    action: str
    context: dict[str, Any]


@router.get("/policies", response_model=PageOut[PolicyOut])
def list_policies(gw: GatewayDep, _who: Caller) -> PageOut[PolicyOut]:
    return PageOut(items=[PolicyOut.of(r) for r in gw.policies.list()])


@router.get("/policies/{name}", response_model=PolicyOut)
def get_policy(name: str, gw: GatewayDep, _who: Caller) -> PolicyOut:
    return PolicyOut.of(gw.policies.get(name))


@router.post("/policies", response_model=PolicyOut, status_code=status.HTTP_201_CREATED)
def add_policy(body: PolicyIn, gw: GatewayDep, who: Admin, addr: ClientAddr) -> PolicyOut:
    record = gw.policies.put(
        body.name,
        body.text,
        description=body.description,
        enabled=body.enabled,
        create_only=True,
        caller=who,
        client_addr=addr,
    )
    return PolicyOut.of(record)


@router.put("/policies/{name}", response_model=PolicyOut)
def put_policy(
    name: str, body: PolicyUpdate, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> PolicyOut:
    record = gw.policies.put(
        name,
        body.text,
        description=body.description,
        enabled=body.enabled,
        caller=who,
        client_addr=addr,
    )
    return PolicyOut.of(record)


@router.delete("/policies/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_policy(name: str, gw: GatewayDep, who: Admin, addr: ClientAddr) -> None:
    gw.policies.delete(name, caller=who, client_addr=addr)


@router.post("/policies/validate")
def validate_policy(body: ValidateIn, gw: GatewayDep, _who: Caller) -> dict[str, Any]:
    engine = gw.policies.validate(body.name, body.text)
    return {"valid": True, "policies": [p.name for p in engine.policies if p.document == body.name]}


def _identity(gw: Any, name: str) -> Identity:
    try:
        return gw.identities.identity(name)  # type: ignore[no-any-return]
    except NotFound:
        raise InvalidInput(f"no identity named {name!r}") from None


@router.post("/policies/test", response_model=TestOut)
def test_policy(body: TestIn, gw: GatewayDep, who: Caller) -> TestOut:
    if body.user != who.principal.name and not (
        who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)
    ):
        raise InvalidInput("you may only test requests for yourself")
    principal = _identity(gw, body.user)
    actor = _identity(gw, body.actor) if body.actor else None
    if actor is not None and actor.kind is not IdentityKind.AGENT:
        raise InvalidInput(f"{body.actor!r} is not an agent")
    connection = gw.connections.get(body.connection)
    statement = None
    action = body.action
    if body.sql is not None:
        statements = classify_postgres(body.sql).statements
        statement = statements[0]
        if len(statements) > 1:
            raise InvalidInput("test one statement at a time")
        action = action or f"sql:{statement.kind.value}"
    if not action:
        raise InvalidInput("give sql or action")
    request = Request(
        action=action,
        principal=principal,
        actor=actor,
        target=Target(connection.name, connection.type.value, connection.tags),
        statement=statement,
        text=body.sql or "",
        client_addr=body.client_addr,
        at=body.at,
        context={"has_grant": body.has_grant},
    )
    return _test_out(gw.policies.test(request), action)


def _test_out(explanation: Explanation, action: str) -> TestOut:
    decision = explanation.decision
    return TestOut(
        outcome=decision.outcome.value,
        reason=decision.reason,
        mask_profile=decision.mask_profile,
        decided_by=list(decision.policies),
        matched=[
            MatchedOut(
                name=p.name, document=p.document, effect=p.effect, annotations=dict(p.annotations)
            )
            for p in explanation.matched
        ],
        errors=[f"{p.name}: {err}" for p, err in explanation.errored],
        action=action,
        context=dict(explanation.context),
    )
