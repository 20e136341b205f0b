"""SQLAlchemy 2 models: the gateway's durable state.

The schema is owned by Alembic (``store/migrations``); these classes are the ORM view of
it. Types are chosen to work the same on SQLite (embedded default) and PostgreSQL.
Timestamps are stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that always comes back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class IdentityRow(Base):
    """A user (human) or agent (non-human) identity."""

    __tablename__ = "identities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    source: Mapped[str] = mapped_column(String(16), default="local")
    oidc_issuer: Mapped[str | None] = mapped_column(String(512))
    oidc_subject: Mapped[str | None] = mapped_column(String(256))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    groups: Mapped[list[GroupRow]] = relationship(
        secondary="identity_groups", back_populates="members", lazy="selectin"
    )

    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_identities_oidc"),)


class GroupRow(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list[IdentityRow]] = relationship(
        secondary="identity_groups", back_populates="groups", lazy="raise"
    )


class IdentityGroupRow(Base):
    __tablename__ = "identity_groups"

    identity_id: Mapped[str] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class APITokenRow(Base):
    """An opaque bearer token; only a SHA-256 digest of its secret part is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default="api")
    secret_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(36))
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(36))
    last_used_at: Mapped[datetime | None] = mapped_column()
    last_used_addr: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("identity_id", "name", name="uq_api_tokens_identity_name"),
        Index("ix_api_tokens_identity", "identity_id"),
    )


class DelegationRow(Base):
    """A user's consent that an agent may act on the user's behalf, until it expires."""

    __tablename__ = "delegations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    reason: Mapped[str | None] = mapped_column(String(512))
    connections: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class DelegatedTokenRow(Base):
    """A short-lived token issued by token exchange; the JWT ``jti`` is the key."""

    __tablename__ = "delegated_tokens"

    jti: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    delegation_id: Mapped[str | None] = mapped_column(
        ForeignKey("delegations.id", ondelete="CASCADE")
    )
    subject_token_id: Mapped[str | None] = mapped_column(String(32))
    actor_token_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class ConnectionRow(Base):
    """A registered target. ``credential_blob`` is AES-256-GCM ciphertext (see vault)."""

    __tablename__ = "connections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    database: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255))
    tls_mode: Mapped[str] = mapped_column(String(16), default="prefer")
    tls_ca: Mapped[str | None] = mapped_column(Text)
    tls_server_name: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(String(1024))
    credential_kind: Mapped[str | None] = mapped_column(String(16))
    credential_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    credential_key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(36))


class AdminAuditRow(Base):
    """One administrative action: who changed what, when, and from where."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    on_behalf_of: Mapped[str | None] = mapped_column(String(128))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_name: Mapped[str | None] = mapped_column(String(256))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_admin_audit_at", "at"),
        Index("ix_admin_audit_action", "action"),
    )


class SessionRow(Base):
    """One client connection through the gateway to one connection (the audit index)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(16))
    connection_id: Mapped[str | None] = mapped_column(String(36))
    connection_name: Mapped[str] = mapped_column(String(128))
    identity_id: Mapped[str] = mapped_column(String(36))
    identity_name: Mapped[str] = mapped_column(String(128))
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    auth_method: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(64))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    client_program: Mapped[str | None] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String(256))
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recording_path: Mapped[str | None] = mapped_column(String(1024))
    # Recording completeness and tamper evidence (migration 0005).
    grant_ids: Mapped[list[str] | None] = mapped_column(JSON)
    event_count: Mapped[int | None] = mapped_column(Integer)
    seal_digest: Mapped[str | None] = mapped_column(String(64))
    seal_signature: Mapped[str | None] = mapped_column(String(128))
    seal_key_id: Mapped[str | None] = mapped_column(String(64))
    recording_state: Mapped[str | None] = mapped_column(String(16))  # ok, failed, off, deleted
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the recording went once uploaded, e.g. ``s3://bucket/key`` (migration 0007).
    recording_location: Mapped[str | None] = mapped_column(String(1024))
    # The gateway node that recorded it, and the order in which sessions were closed
    # (migration 0008; both set by the store, see :mod:`jitgate.store.closing`).
    node_id: Mapped[str | None] = mapped_column(String(36))
    close_seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_sessions_started_at", "started_at"),
        Index("ix_sessions_identity", "identity_name"),
        Index("ix_sessions_connection", "connection_name"),
        Index("ix_sessions_ended_at", "ended_at"),
        Index("ix_sessions_close_seq", "close_seq", unique=True),
        Index("ix_sessions_node", "node_id", "ended_at"),
    )


class GatewayNodeRow(Base):
    """A gateway process sharing the store, and when it was last seen (migration 0008).

    ``id`` is stable across restarts of a node (kept in its data dir); ``started_at`` is
    when its current run began and ``heartbeat_at`` when it last said it is alive.
    """

    __tablename__ = "gateway_nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column()


class SigningKeyRow(Base):
    """A public key that has signed for a gateway node: kept for good, so that what it
    signed (recording seals) still verifies after a key change or on other nodes."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    node_id: Mapped[str | None] = mapped_column(String(36))


class ExportCursorRow(Base):
    """Where an audit export stream has got to (acknowledged by its sink)."""

    __tablename__ = "export_cursors"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RecordingUploadRow(Base):
    """A recording's multipart upload in progress to object storage (migration 0007).

    ``parts`` lists the finished parts as ``{"n": number, "etag": ..., "size": bytes}``,
    written as each one completes, so that a restarted uploader goes on from the next.
    The row is deleted once the object is complete and checked.
    """

    __tablename__ = "recording_uploads"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(String(1024))
    upload_id: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    part_size: Mapped[int] = mapped_column(BigInteger)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PolicyRow(Base):
    """A named Cedar document. The enabled documents together are the policy set."""

    __tablename__ = "policies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    text: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(1024))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))


class RevisionRow(Base):
    """Monotonic counters (``policies``, ``grants``): bumped on every change, so every
    node can tell cheaply whether its cached policy set or grant state is stale."""

    __tablename__ = "revisions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApprovalRuleRow(Base):
    """Who must approve access to which connections, and the limits of what they grant."""

    __tablename__ = "approval_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    connections: Mapped[list[str] | None] = mapped_column(JSON)
    tags: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    steps: Mapped[list[Any]] = mapped_column(JSON)
    allow_self_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_approve_groups: Mapped[list[str] | None] = mapped_column(JSON)
    auto_approve_business_hours_only: Mapped[bool] = mapped_column(Boolean, default=False)
    max_duration_seconds: Mapped[int] = mapped_column(Integer, default=8 * 3600)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    pending_expiry_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    allow_break_glass: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccessRequestRow(Base):
    """A request for just-in-time access to a connection, or for one exact statement."""

    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # access, statement, break_glass
    status: Mapped[str] = mapped_column(String(16), default="pending")
    requester_id: Mapped[str] = mapped_column(String(36))
    requester_name: Mapped[str] = mapped_column(String(128))
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    connection_name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[list[str] | None] = mapped_column(JSON)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    ticket: Mapped[str | None] = mapped_column(String(256))
    task_id: Mapped[str | None] = mapped_column(String(128))
    statement_text: Mapped[str | None] = mapped_column(Text)
    statement_key: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(36))
    rule_name: Mapped[str | None] = mapped_column(String(128))
    steps: Mapped[list[Any]] = mapped_column(JSON)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        Index("ix_access_requests_status", "status"),
        Index("ix_access_requests_requester", "requester_name"),
        Index("ix_access_requests_statement", "statement_key"),
    )


class ApprovalRow(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    approver_id: Mapped[str] = mapped_column(String(36))
    approver_name: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(16), default="api")
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("request_id", "approver_id", name="uq_approvals_request_approver"),
    )


class GrantRow(Base):
    """Access granted just in time: active from start until end, uses or task completion."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # access, statement, break_glass
    identity_id: Mapped[str] = mapped_column(String(36))
    identity_name: Mapped[str] = mapped_column(String(128))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    connection_name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[list[str] | None] = mapped_column(JSON)
    statement_key: Mapped[str | None] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column()
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoke_reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_grants_identity_connection", "identity_name", "connection_name"),
        Index("ix_grants_task", "task_id"),
        Index("ix_grants_ends_at", "ends_at"),
    )


class MaskProfileRow(Base):
    """An operator-defined mask profile (rules + custom detectors), as JSON."""

    __tablename__ = "mask_profiles"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class SSHKeyRow(Base):
    """A public key registered to an identity: it logs in to the SSH listener."""

    __tablename__ = "ssh_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    algorithm: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(128), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(36))
    last_used_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("identity_id", "name", name="uq_ssh_keys_identity_name"),
        Index("ix_ssh_keys_identity", "identity_id"),
    )
