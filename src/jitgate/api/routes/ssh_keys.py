"""SSH public keys of identities: ``/api/v1/ssh-keys`` (log-in to the SSH listener).

Anyone may register, list and remove their own keys; admins may do so for any identity
(an agent's owner for the agent), and auditors may list everyone's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from jitgate.api.deps import Caller, ClientAddr, GatewayDep
from jitgate.errors import Forbidden
from jitgate.identity.principal import Authenticated, Role
from jitgate.protocols.ssh.keys import SSHKeyInfo, SSHKeyService
from jitgate.server.gateway import Gateway

router = APIRouter(prefix="/api/v1")


class SSHKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(min_length=16, max_length=16384)
    name: str | None = Field(default=None, max_length=128)
    identity: str | None = Field(default=None, max_length=128, description="default: yourself")


class SSHKeyOut(BaseModel):
    id: str
    identity: str
    name: str
    algorithm: str
    fingerprint: str
    public_key: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, info: SSHKeyInfo) -> SSHKeyOut:
        return cls(
            id=info.id,
            identity=info.identity,
            name=info.name,
            algorithm=info.algorithm,
            fingerprint=info.fingerprint,
            public_key=info.public_key,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
        )


class SSHKeyList(BaseModel):
    items: list[SSHKeyOut]
    next_cursor: str | None = None


def _service(gw: Gateway) -> SSHKeyService:
    return SSHKeyService(gw.store, gw.identities)


def _may_manage(gw: Gateway, who: Authenticated, identity: str) -> None:
    if who.actor is not None:
        raise Forbidden("a delegated token cannot manage SSH keys")
    if identity == who.principal.name or who.has_role(Role.ADMIN):
        return
    if gw.identities.get(identity).owner == who.principal.name:
        return
    raise Forbidden("only an admin (or an agent's owner) can manage someone else's SSH keys")


@router.post(
    "/ssh-keys", response_model=SSHKeyOut, status_code=status.HTTP_201_CREATED, tags=["ssh"]
)
def add_ssh_key(body: SSHKeyCreate, gw: GatewayDep, who: Caller, addr: ClientAddr) -> SSHKeyOut:
    identity = body.identity or who.principal.name
    _may_manage(gw, who, identity)
    info = _service(gw).add(identity, body.public_key, name=body.name, caller=who, client_addr=addr)
    return SSHKeyOut.of(info)


@router.get("/ssh-keys", response_model=SSHKeyList, tags=["ssh"])
def list_ssh_keys(
    gw: GatewayDep,
    who: Caller,
    identity: Annotated[str | None, Query(max_length=128)] = None,
    all: Annotated[bool, Query()] = False,
) -> SSHKeyList:
    privileged = who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)
    if (all or (identity and identity != who.principal.name)) and not privileged:
        raise Forbidden("only admins and auditors can list other identities' SSH keys")
    name = None if all else (identity or who.principal.name)
    return SSHKeyList(items=[SSHKeyOut.of(i) for i in _service(gw).list(name)])


@router.delete("/ssh-keys/{key_id}", response_model=SSHKeyOut, tags=["ssh"])
def remove_ssh_key(key_id: str, gw: GatewayDep, who: Caller, addr: ClientAddr) -> SSHKeyOut:
    service = _service(gw)
    _may_manage(gw, who, service.get(key_id).identity)
    return SSHKeyOut.of(service.remove(key_id, caller=who, client_addr=addr))
