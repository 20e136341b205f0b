"""whoami, local login, auth discovery, users (and agents)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from jitgate.api.deps import Admin, AdminOrAuditor, Caller, ClientAddr, GatewayDep, PageDep
from jitgate.api.ratelimit import LoginLimiter
from jitgate.api.schemas import (
    IdentityOut,
    LoginOut,
    LoginRequest,
    PageOut,
    UserCreate,
    UserOut,
    UserUpdate,
    WhoAmIOut,
)
from jitgate.errors import Forbidden
from jitgate.identity.principal import IdentityKind, Role

router = APIRouter(prefix="/api/v1")


@router.get("/whoami", response_model=WhoAmIOut, tags=["identity"])
def whoami(who: Caller) -> WhoAmIOut:
    return WhoAmIOut.of(who)


@router.get("/auth/config", tags=["identity"])
def auth_config(gw: GatewayDep) -> dict[str, Any]:
    """What a client needs to log in: local password login and/or the OIDC issuer."""
    oidc = gw.settings.oidc
    return {
        "local_login": True,
        "oidc": None
        if oidc is None
        else {"issuer": oidc.issuer, "client_id": oidc.client_id, "scopes": oidc.scopes},
    }


@router.post("/login", response_model=LoginOut, tags=["identity"])
def login(body: LoginRequest, request: Request, gw: GatewayDep, addr: ClientAddr) -> LoginOut:
    limiter: LoginLimiter = request.app.state.login_limiter
    limiter.check(body.username, addr)
    try:
        identity = gw.identities.login(
            body.username, body.password.get_secret_value(), client_addr=addr
        )
    except Exception:
        limiter.failed(body.username, addr)
        raise
    limiter.succeeded(body.username, addr)
    info, token = gw.identities.create_token(
        identity.name,
        "login",
        kind="login",
        ttl=timedelta(hours=gw.settings.tokens.login_ttl_hours),
    )
    return LoginOut(
        token=token, token_id=info.id, expires_at=info.expires_at, identity=IdentityOut.of(identity)
    )


@router.get("/users", response_model=PageOut[UserOut], tags=["users"])
def list_users(
    gw: GatewayDep,
    _who: AdminOrAuditor,
    page: PageDep,
    kind: Annotated[IdentityKind | None, Query()] = None,
) -> PageOut[UserOut]:
    infos = gw.identities.list(kind=kind, after=page.cursor, limit=page.limit + 1)
    items = [UserOut.from_info(i) for i in infos[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].name if len(infos) > page.limit else None)


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED, tags=["users"])
def create_user(body: UserCreate, gw: GatewayDep, who: Admin, addr: ClientAddr) -> UserOut:
    info = gw.identities.create_identity(
        body.name,
        kind=IdentityKind(body.kind),
        groups=body.groups,
        password=body.password.get_secret_value() if body.password else None,
        email=body.email,
        display_name=body.display_name,
        owner=body.owner,
        caller=who,
        client_addr=addr,
    )
    return UserOut.from_info(info)


@router.get("/users/{name}", response_model=UserOut, tags=["users"])
def get_user(name: str, gw: GatewayDep, who: Caller) -> UserOut:
    if name != who.principal.name and not (who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)):
        raise Forbidden("you may only look at your own identity")
    return UserOut.from_info(gw.identities.get(name))


@router.patch("/users/{name}", response_model=UserOut, tags=["users"])
def update_user(
    name: str, body: UserUpdate, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> UserOut:
    info = gw.identities.update(
        name,
        groups=body.groups,
        disabled=body.disabled,
        password=body.password.get_secret_value() if body.password else None,
        email=body.email,
        display_name=body.display_name,
        caller=who,
        client_addr=addr,
    )
    gw.authenticator.invalidate()
    return UserOut.from_info(info)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
def delete_user(name: str, gw: GatewayDep, who: Admin, addr: ClientAddr) -> None:
    gw.identities.delete(name, caller=who, client_addr=addr)
    gw.authenticator.invalidate()
