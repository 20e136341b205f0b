"""API tokens (users and agents), token exchange (delegation), delegation records."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from jitgate.api.deps import Caller, ClientAddr, GatewayDep, PageDep
from jitgate.api.schemas import (
    DelegationCreate,
    DelegationOut,
    PageOut,
    TokenCreate,
    TokenCreated,
    TokenExchange,
    TokenExchangeOut,
    TokenOut,
)
from jitgate.errors import Forbidden, InvalidInput, NotFound
from jitgate.identity.delegation import TOKEN_TYPE_JWT
from jitgate.identity.principal import Authenticated, IdentityKind, Role
from jitgate.server.gateway import Gateway
from jitgate.store.models import utcnow

router = APIRouter(prefix="/api/v1")


def _owner_for_new_token(
    body: TokenCreate, gw: Gateway, who: Authenticated, addr: str | None
) -> str:
    if who.actor is not None:
        raise Forbidden("a delegated token cannot create tokens")
    if body.agent:
        try:
            info = gw.identities.get(body.agent)
        except NotFound:
            if not (body.create_agent and who.has_role(Role.ADMIN)):
                raise
            gw.identities.create_identity(
                body.agent,
                kind=IdentityKind.AGENT,
                owner=who.principal.name,
                caller=who,
                client_addr=addr,
            )
            return body.agent
        if info.identity.kind is not IdentityKind.AGENT:
            raise InvalidInput(f"{body.agent!r} is not an agent")
        if not (who.has_role(Role.ADMIN) or info.owner == who.principal.name):
            raise Forbidden("only an admin or the agent's owner can create its tokens")
        return body.agent
    target = body.user or who.principal.name
    if target != who.principal.name and not who.has_role(Role.ADMIN):
        raise Forbidden("only an admin can create tokens for someone else")
    return target


@router.post(
    "/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, tags=["tokens"]
)
def create_token(body: TokenCreate, gw: GatewayDep, who: Caller, addr: ClientAddr) -> TokenCreated:
    owner = _owner_for_new_token(body, gw, who, addr)
    ttl = timedelta(seconds=body.expires_in) if body.expires_in else None
    info, token = gw.identities.create_token(
        owner, body.name, ttl=ttl, caller=who, client_addr=addr
    )
    return TokenCreated(**TokenOut.of(info).model_dump(), token=token)


@router.get("/tokens", response_model=PageOut[TokenOut], tags=["tokens"])
def list_tokens(
    gw: GatewayDep,
    who: Caller,
    page: PageDep,
    identity: Annotated[str | None, Query(max_length=128)] = None,
    all: Annotated[bool, Query()] = False,
    include_inactive: Annotated[bool, Query()] = False,
) -> PageOut[TokenOut]:
    privileged = who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)
    if (all or (identity and identity != who.principal.name)) and not privileged:
        raise Forbidden("only admins and auditors can list other identities' tokens")
    name = None if all else (identity or who.principal.name)
    infos = gw.identities.list_tokens(
        identity_name=name,
        include_inactive=include_inactive,
        after=page.cursor,
        limit=page.limit + 1,
    )
    items = [TokenOut.of(i) for i in infos[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].id if len(infos) > page.limit else None)


@router.delete("/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
def revoke_token(token_id: str, gw: GatewayDep, who: Caller, addr: ClientAddr) -> TokenOut:
    owner_check = None if who.has_role(Role.ADMIN) else who.principal.id
    info = gw.identities.revoke_token(
        token_id, caller=who, client_addr=addr, require_owner=owner_check
    )
    gw.authenticator.invalidate()
    return TokenOut.of(info)


@router.post("/tokens/exchange", response_model=TokenExchangeOut, tags=["tokens"])
async def exchange_token(request: Request, gw: GatewayDep) -> TokenExchangeOut:
    """RFC 8693 token exchange: an agent's token + a user's consent → a delegated token.

    Accepts ``application/x-www-form-urlencoded`` (as RFC 8693 specifies) or JSON.
    """
    from starlette.concurrency import run_in_threadpool

    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            raw = dict(parse_qsl((await request.body()).decode("utf-8"), strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("request body is not valid form data") from None
    else:
        try:
            raw = await request.json()
        except ValueError:
            raise InvalidInput("request body is not valid JSON") from None
    try:
        body = TokenExchange.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    addr = request.client.host if request.client else None
    result = await run_in_threadpool(
        lambda: gw.delegations.exchange(
            actor_token=body.actor_token,
            subject_token=body.subject_token,
            subject_token_type=body.subject_token_type,
            client_addr=addr,
        )
    )
    return TokenExchangeOut(
        access_token=result.access_token,
        issued_token_type=TOKEN_TYPE_JWT,
        expires_in=max(0, int((result.expires_at - utcnow()).total_seconds())),
    )


@router.post(
    "/delegations",
    response_model=DelegationOut,
    status_code=status.HTTP_201_CREATED,
    tags=["delegations"],
)
def create_delegation(
    body: DelegationCreate, gw: GatewayDep, who: Caller, addr: ClientAddr
) -> DelegationOut:
    info = gw.delegations.create(
        who,
        body.agent,
        ttl=timedelta(seconds=body.expires_in),
        connections=body.connections,
        reason=body.reason,
        client_addr=addr,
    )
    return DelegationOut.of(info)


@router.get("/delegations", response_model=PageOut[DelegationOut], tags=["delegations"])
def list_delegations(gw: GatewayDep, who: Caller, page: PageDep) -> PageOut[DelegationOut]:
    privileged = who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)
    infos = gw.delegations.list(
        user_id=None if privileged else who.principal.id, after=page.cursor, limit=page.limit + 1
    )
    items = [DelegationOut.of(i) for i in infos[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].id if len(infos) > page.limit else None)


@router.delete("/delegations/{delegation_id}", response_model=DelegationOut, tags=["delegations"])
def revoke_delegation(
    delegation_id: str, gw: GatewayDep, who: Caller, addr: ClientAddr
) -> DelegationOut:
    info = gw.delegations.revoke(who, delegation_id, client_addr=addr)
    gw.authenticator.invalidate()
    return DelegationOut.of(info)
