"""Request-scoped dependencies: the gateway, the authenticated caller, role checks, paging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Query, Request

from jitgate.errors import Forbidden, Unauthenticated
from jitgate.identity.principal import Authenticated, Role
from jitgate.server.gateway import Gateway


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("missing Authorization: Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("expected Authorization: Bearer <token>")
    return token.strip()


def caller(
    request: Request,
    gw: Annotated[Gateway, Depends(gateway)],
    token: Annotated[str, Depends(bearer_token)],
) -> Authenticated:
    return gw.authenticator.authenticate(token, client_addr=client_addr(request))


def require(*roles: Role) -> Callable[[Authenticated], Authenticated]:
    """Caller must hold at least one of ``roles`` (admin holds all)."""
    names = " or ".join(r.value for r in roles)

    def check(who: Annotated[Authenticated, Depends(caller)]) -> Authenticated:
        if not any(who.has_role(role) for role in roles):
            raise Forbidden(f"this needs the {names} role")
        return who

    return check


Caller = Annotated[Authenticated, Depends(caller)]
Admin = Annotated[Authenticated, Depends(require(Role.ADMIN))]
AdminOrAuditor = Annotated[Authenticated, Depends(require(Role.ADMIN, Role.AUDITOR))]
GatewayDep = Annotated[Gateway, Depends(gateway)]
ClientAddr = Annotated[str | None, Depends(client_addr)]


class Page:
    def __init__(
        self,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
    ) -> None:
        max_size = request.app.state.gateway.settings.api.page_size_max
        self.limit = min(limit, max_size)
        self.cursor = cursor


PageDep = Annotated[Page, Depends(Page)]
