"""Connections: registered targets. Credentials are write-only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from jitgate.api.deps import Admin, Caller, ClientAddr, GatewayDep, PageDep
from jitgate.api.schemas import ConnectionCreate, ConnectionOut, ConnectionUpdate, PageOut
from jitgate.connections.types import ConnectionType, Credential, CredentialKind, parse_tag
from jitgate.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["connections"])


def _credential(body: ConnectionCreate | ConnectionUpdate) -> Credential | None:
    if body.password is not None:
        return Credential(CredentialKind.PASSWORD, body.password.get_secret_value())
    if body.private_key is not None:
        passphrase = body.private_key_passphrase
        return Credential(
            CredentialKind.PRIVATE_KEY,
            body.private_key.get_secret_value(),
            passphrase.get_secret_value() if passphrase else None,
        )
    if body.token is not None:
        return Credential(CredentialKind.TOKEN, body.token.get_secret_value())
    return None


@router.get("/connections", response_model=PageOut[ConnectionOut])
def list_connections(
    gw: GatewayDep,
    _who: Caller,
    page: PageDep,
    type: Annotated[ConnectionType | None, Query()] = None,
    tag: Annotated[list[str] | None, Query(max_length=20)] = None,
) -> PageOut[ConnectionOut]:
    tags = dict(parse_tag(t) for t in tag or [])
    infos = gw.connections.list(type=type, tags=tags, after=page.cursor, limit=page.limit + 1)
    items = [ConnectionOut.of(i) for i in infos[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].name if len(infos) > page.limit else None)


@router.post("/connections", response_model=ConnectionOut, status_code=status.HTTP_201_CREATED)
def create_connection(
    body: ConnectionCreate, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> ConnectionOut:
    info = gw.connections.create(
        name=body.name,
        type=body.type,
        host=body.host,
        port=body.port,
        database=body.database,
        username=body.username,
        tls_mode=body.tls_mode,
        tls_ca=body.tls_ca,
        tls_server_name=body.tls_server_name,
        tags=body.tags,
        options=body.options,
        description=body.description,
        credential=_credential(body),
        caller=who,
        client_addr=addr,
    )
    return ConnectionOut.of(info)


@router.get("/connections/{name}", response_model=ConnectionOut)
def get_connection(name: str, gw: GatewayDep, _who: Caller) -> ConnectionOut:
    return ConnectionOut.of(gw.connections.get(name))


@router.patch("/connections/{name}", response_model=ConnectionOut)
def update_connection(
    name: str, body: ConnectionUpdate, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> ConnectionOut:
    changes: dict[str, Any] = {
        field: getattr(body, field)
        for field in body.model_fields_set
        if field
        in {
            "host",
            "port",
            "database",
            "username",
            "tls_mode",
            "tls_ca",
            "tls_server_name",
            "tags",
            "options",
            "description",
        }
    }
    for required in ("host", "port", "tls_mode", "tags", "options"):
        if required in changes and changes[required] is None:
            raise InvalidInput(f"{required} cannot be null")
    credential = _credential(body)
    if credential is not None:
        changes["credential"] = credential
    elif body.clear_credential:
        changes["credential"] = None
    info = gw.connections.update(name, caller=who, client_addr=addr, **changes)
    return ConnectionOut.of(info)


@router.delete("/connections/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_connection(name: str, gw: GatewayDep, who: Admin, addr: ClientAddr) -> None:
    gw.connections.delete(name, caller=who, client_addr=addr)
