"""Request and response bodies of the REST API (strict: unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from jitgate.audit.log import AuditEvent
from jitgate.connections.types import ConnectionInfo, ConnectionType, TLSMode
from jitgate.identity.delegation import DelegationInfo
from jitgate.identity.principal import Authenticated, Identity
from jitgate.identity.service import IdentityInfo, TokenInfo
from jitgate.recording.consumers import Consumer

T = TypeVar("T")

Name = Field(min_length=1, max_length=128)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# ------------------------------------------------------------------ identities


class IdentityOut(BaseModel):
    id: str
    name: str
    kind: str
    groups: list[str]
    roles: list[str]

    @classmethod
    def of(cls, identity: Identity) -> IdentityOut:
        return cls(
            id=identity.id,
            name=identity.name,
            kind=identity.kind.value,
            groups=sorted(identity.groups),
            roles=sorted(r.value for r in identity.roles),
        )


class WhoAmIOut(BaseModel):
    identity: IdentityOut
    actor: IdentityOut | None
    method: str
    token_id: str | None
    delegation_id: str | None
    expires_at: datetime | None
    connections: list[str] | None

    @classmethod
    def of(cls, who: Authenticated) -> WhoAmIOut:
        return cls(
            identity=IdentityOut.of(who.principal),
            actor=IdentityOut.of(who.actor) if who.actor else None,
            method=who.method.value,
            token_id=who.token_id,
            delegation_id=who.delegation_id,
            expires_at=who.expires_at,
            connections=sorted(who.connections) if who.connections is not None else None,
        )


class UserCreate(Strict):
    name: str = Name
    kind: Literal["user", "agent"] = "user"
    groups: list[str] = Field(default_factory=list, max_length=100)
    password: SecretStr | None = Field(default=None, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=256)
    owner: str | None = Field(default=None, max_length=128)


class UserUpdate(Strict):
    groups: list[str] | None = Field(default=None, max_length=100)
    disabled: bool | None = None
    password: SecretStr | None = Field(default=None, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=256)


class UserOut(IdentityOut):
    email: str | None
    display_name: str | None
    source: str
    disabled: bool
    has_password: bool
    owner: str | None
    created_at: datetime

    @classmethod
    def from_info(cls, info: IdentityInfo) -> UserOut:
        base = IdentityOut.of(info.identity).model_dump()
        return cls(
            **base,
            email=info.email,
            display_name=info.display_name,
            source=info.source,
            disabled=info.disabled,
            has_password=info.has_password,
            owner=info.owner,
            created_at=info.created_at,
        )


class LoginRequest(Strict):
    username: str = Name
    password: SecretStr = Field(max_length=1024)


class LoginOut(BaseModel):
    token: str
    token_id: str
    expires_at: datetime | None
    identity: IdentityOut


# ---------------------------------------------------------------------- tokens


class TokenCreate(Strict):
    name: str = Name
    user: str | None = Field(default=None, max_length=128)
    agent: str | None = Field(default=None, max_length=128)
    expires_in: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)
    create_agent: bool = False

    @model_validator(mode="after")
    def _one_owner(self) -> TokenCreate:
        if self.user and self.agent:
            raise ValueError("give either user or agent, not both")
        return self


class TokenOut(BaseModel):
    id: str
    name: str
    identity: str
    identity_kind: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls(
            id=info.id,
            name=info.name,
            identity=info.identity,
            identity_kind=info.identity_kind,
            kind=info.kind,
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            last_used_at=info.last_used_at,
            active=info.active,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself. Shown once; store it now.")


class TokenExchange(Strict):
    grant_type: Literal["urn:ietf:params:oauth:grant-type:token-exchange"]
    subject_token: str = Field(min_length=1, max_length=16384)
    subject_token_type: str = Field(max_length=200)
    actor_token: str = Field(min_length=1, max_length=16384)
    actor_token_type: str = Field(
        default="urn:ietf:params:oauth:token-type:access_token", max_length=200
    )
    requested_token_type: str | None = Field(default=None, max_length=200)
    audience: str | None = Field(default=None, max_length=200)
    scope: str | None = Field(default=None, max_length=1000)


class TokenExchangeOut(BaseModel):
    access_token: str
    issued_token_type: str
    token_type: str = "Bearer"
    expires_in: int


class DelegationCreate(Strict):
    agent: str = Name
    expires_in: int = Field(ge=60, le=30 * 86400)
    connections: list[str] | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, max_length=512)


class DelegationOut(BaseModel):
    id: str
    user: str
    agent: str
    reason: str | None
    connections: list[str] | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, info: DelegationInfo) -> DelegationOut:
        return cls(
            id=info.id,
            user=info.user,
            agent=info.agent,
            reason=info.reason,
            connections=list(info.connections) if info.connections else None,
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            active=info.active,
        )


# ----------------------------------------------------------------- connections

Scalar = str | int | float | bool | None


class ConnectionCreate(Strict):
    name: str = Name
    type: ConnectionType
    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    tls_mode: TLSMode = TLSMode.PREFER
    tls_ca: str | None = Field(default=None, max_length=65536)
    tls_server_name: str | None = Field(default=None, max_length=255)
    tags: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Scalar] = Field(default_factory=dict)
    description: str | None = Field(default=None, max_length=1024)
    password: SecretStr | None = Field(default=None, max_length=4096)
    private_key: SecretStr | None = Field(default=None, max_length=65536)
    private_key_passphrase: SecretStr | None = Field(default=None, max_length=1024)
    token: SecretStr | None = Field(default=None, max_length=65536)

    @model_validator(mode="after")
    def _one_credential(self) -> ConnectionCreate:
        given = [f for f in ("password", "private_key", "token") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one credential, got {', '.join(given)}")
        if self.private_key_passphrase is not None and self.private_key is None:
            raise ValueError("private_key_passphrase needs private_key")
        return self


class ConnectionUpdate(Strict):
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    tls_mode: TLSMode | None = None
    tls_ca: str | None = Field(default=None, max_length=65536)
    tls_server_name: str | None = Field(default=None, max_length=255)
    tags: dict[str, str] | None = None
    options: dict[str, Scalar] | None = None
    description: str | None = Field(default=None, max_length=1024)
    password: SecretStr | None = Field(default=None, max_length=4096)
    private_key: SecretStr | None = Field(default=None, max_length=65536)
    private_key_passphrase: SecretStr | None = Field(default=None, max_length=1024)
    token: SecretStr | None = Field(default=None, max_length=65536)
    clear_credential: bool = False

    @model_validator(mode="after")
    def _one_credential(self) -> ConnectionUpdate:
        given = [f for f in ("password", "private_key", "token") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one credential, got {', '.join(given)}")
        if given and self.clear_credential:
            raise ValueError("clear_credential contradicts a new credential")
        return self


class CredentialOut(BaseModel):
    kind: str
    set: bool = True


class ConnectionOut(BaseModel):
    id: str
    name: str
    type: str
    host: str
    port: int
    database: str | None
    username: str | None
    tls_mode: str
    tls_ca: str | None
    tls_server_name: str | None
    tags: dict[str, str]
    options: dict[str, Any]
    description: str | None
    credential: CredentialOut | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: ConnectionInfo) -> ConnectionOut:
        return cls(
            id=info.id,
            name=info.name,
            type=info.type.value,
            host=info.host,
            port=info.port,
            database=info.database,
            username=info.username,
            tls_mode=info.tls_mode.value,
            tls_ca=info.tls_ca,
            tls_server_name=info.tls_server_name,
            tags=info.tags,
            options=info.options,
            description=info.description,
            credential=CredentialOut(kind=info.credential_kind.value)
            if info.credential_kind
            else None,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


# ----------------------------------------------------------------------- audit


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    action: str
    outcome: str
    actor: str | None
    on_behalf_of: str | None
    target_type: str | None
    target_name: str | None
    client_addr: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            action=event.action,
            outcome=event.outcome,
            actor=event.actor,
            on_behalf_of=event.on_behalf_of,
            target_type=event.target_type,
            target_name=event.target_name,
            client_addr=event.client_addr,
            details=dict(event.details),
        )


class AuditConsumerOut(BaseModel):
    name: str
    position: int  # close number: every session closed before it was delivered to it
    admin: int  # the last administrative event delivered to it
    last_seen: datetime

    @classmethod
    def of(cls, consumer: Consumer) -> AuditConsumerOut:
        return cls(
            name=consumer.name,
            position=consumer.position,
            admin=consumer.admin,
            last_seen=consumer.last_seen,
        )
