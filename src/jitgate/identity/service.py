"""Identities, groups, roles, passwords and API tokens, on top of the store.

All methods are synchronous and short; asyncio callers run them in a worker thread.
Every change is written together with its admin-audit event in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jitgate.audit.log import AuditLog
from jitgate.config import RolesSettings, TokenSettings
from jitgate.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from jitgate.identity import secrets as tokens
from jitgate.identity.names import check_identity_name, check_simple_name
from jitgate.identity.principal import (
    Authenticated,
    AuthMethod,
    Identity,
    IdentityKind,
    Role,
)
from jitgate.store.db import Store
from jitgate.store.models import APITokenRow, GroupRow, IdentityRow, utcnow

LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    identity: str
    identity_kind: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    identity: Identity
    display_name: str | None
    email: str | None
    source: str
    disabled: bool
    has_password: bool
    owner: str | None
    created_at: datetime


class IdentityService:
    def __init__(self, store: Store, roles: RolesSettings, token_settings: TokenSettings) -> None:
        self.store = store
        self.roles = roles
        self.token_settings = token_settings

    # ----------------------------------------------------------------- mapping

    def roles_for(self, groups: Iterable[str]) -> frozenset[Role]:
        groups = set(groups)
        found = {Role.USER}
        for role, members in (
            (Role.ADMIN, self.roles.admin),
            (Role.APPROVER, self.roles.approver),
            (Role.AUDITOR, self.roles.auditor),
        ):
            if groups.intersection(members):
                found.add(role)
        return frozenset(found)

    def to_identity(self, row: IdentityRow) -> Identity:
        groups = frozenset(g.name for g in row.groups)
        return Identity(
            id=row.id,
            name=row.name,
            kind=IdentityKind(row.kind),
            groups=groups,
            roles=self.roles_for(groups),
        )

    def _info(self, session: Session, row: IdentityRow) -> IdentityInfo:
        owner = session.get(IdentityRow, row.owner_id) if row.owner_id else None
        return IdentityInfo(
            identity=self.to_identity(row),
            display_name=row.display_name,
            email=row.email,
            source=row.source,
            disabled=row.disabled,
            has_password=row.password_hash is not None,
            owner=owner.name if owner else None,
            created_at=row.created_at,
        )

    # -------------------------------------------------------------- identities

    @staticmethod
    def _row_by_name(session: Session, name: str) -> IdentityRow:
        row = session.scalar(select(IdentityRow).where(IdentityRow.name == name))
        if row is None:
            raise NotFound(f"no identity named {name[:128]!r}")
        return row

    @staticmethod
    def _groups(session: Session, names: Iterable[str]) -> list[GroupRow]:
        rows = []
        for name in sorted(set(names)):
            check_simple_name(name, "group name")
            group = session.scalar(select(GroupRow).where(GroupRow.name == name))
            if group is None:
                group = GroupRow(name=name)
                session.add(group)
            rows.append(group)
        return rows

    def create_identity(
        self,
        name: str,
        *,
        kind: IdentityKind = IdentityKind.USER,
        groups: Iterable[str] = (),
        password: str | None = None,
        email: str | None = None,
        display_name: str | None = None,
        owner: str | None = None,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> IdentityInfo:
        check_identity_name(name)
        if password is not None and kind is IdentityKind.AGENT:
            raise InvalidInput("agents authenticate with tokens, not passwords")
        if password is not None and len(password) < 8:
            raise InvalidInput("password must be at least 8 characters")
        with self.store.session() as session:
            if session.scalar(select(IdentityRow.id).where(IdentityRow.name == name)):
                raise Conflict(f"an identity named {name!r} already exists")
            owner_row = self._row_by_name(session, owner) if owner else None
            row = IdentityRow(
                id=str(uuid.uuid4()),
                name=name,
                kind=kind.value,
                email=email,
                display_name=display_name,
                source="local",
                password_hash=tokens.hash_password(password) if password else None,
                owner_id=owner_row.id if owner_row else None,
            )
            row.groups = self._groups(session, groups)
            session.add(row)
            AuditLog.record(
                session,
                f"{'agent' if kind is IdentityKind.AGENT else 'user'}:create",
                caller=caller,
                target_type=kind.value,
                target_name=name,
                details={"groups": sorted(set(groups)), "password_set": password is not None},
                client_addr=client_addr,
            )
            try:
                session.flush()
            except IntegrityError as exc:
                raise Conflict(f"an identity named {name!r} already exists") from exc
            return self._info(session, row)

    def get(self, name: str) -> IdentityInfo:
        with self.store.session() as session:
            return self._info(session, self._row_by_name(session, name))

    def identity(self, name: str) -> Identity:
        with self.store.session() as session:
            return self.to_identity(self._row_by_name(session, name))

    def list(
        self, *, kind: IdentityKind | None = None, after: str | None = None, limit: int = 100
    ) -> Sequence[IdentityInfo]:
        with self.store.session() as session:
            stmt = select(IdentityRow).order_by(IdentityRow.name).limit(limit)
            if kind is not None:
                stmt = stmt.where(IdentityRow.kind == kind.value)
            if after:
                stmt = stmt.where(IdentityRow.name > after)
            return [self._info(session, row) for row in session.scalars(stmt)]

    def update(
        self,
        name: str,
        *,
        groups: Iterable[str] | None = None,
        disabled: bool | None = None,
        password: str | None = None,
        email: str | None = None,
        display_name: str | None = None,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> IdentityInfo:
        with self.store.session() as session:
            row = self._row_by_name(session, name)
            changed: list[str] = []
            if groups is not None:
                row.groups = self._groups(session, groups)
                changed.append("groups")
            if disabled is not None:
                if caller and disabled and caller.principal.id == row.id:
                    raise InvalidInput("you cannot disable yourself")
                row.disabled = disabled
                changed.append("disabled")
            if password is not None:
                if row.kind == IdentityKind.AGENT:
                    raise InvalidInput("agents authenticate with tokens, not passwords")
                if len(password) < 8:
                    raise InvalidInput("password must be at least 8 characters")
                row.password_hash = tokens.hash_password(password)
                changed.append("password")
            if email is not None:
                row.email = email
                changed.append("email")
            if display_name is not None:
                row.display_name = display_name
                changed.append("display_name")
            AuditLog.record(
                session,
                f"{row.kind}:update",
                caller=caller,
                target_type=row.kind,
                target_name=name,
                details={
                    "changed": changed,
                    **({"groups": sorted(set(groups))} if groups is not None else {}),
                    **({"disabled": disabled} if disabled is not None else {}),
                },
                client_addr=client_addr,
            )
            session.flush()
            return self._info(session, row)

    def delete(
        self, name: str, *, caller: Authenticated | None = None, client_addr: str | None = None
    ) -> None:
        with self.store.session() as session:
            row = self._row_by_name(session, name)
            if caller and caller.principal.id == row.id:
                raise InvalidInput("you cannot delete yourself")
            kind = row.kind
            session.delete(row)
            AuditLog.record(
                session,
                f"{kind}:delete",
                caller=caller,
                target_type=kind,
                target_name=name,
                client_addr=client_addr,
            )

    def ensure_external(
        self,
        *,
        issuer: str,
        subject: str,
        username: str,
        kind: IdentityKind,
        groups: Sequence[str],
        email: str | None,
    ) -> Identity:
        """Find or provision the identity of an OIDC subject; keep its groups in sync."""
        with self.store.session() as session:
            row = session.scalar(
                select(IdentityRow).where(
                    IdentityRow.oidc_issuer == issuer, IdentityRow.oidc_subject == subject
                )
            )
            if row is None:
                name = self._free_name(session, username)
                row = IdentityRow(
                    id=str(uuid.uuid4()),
                    name=name,
                    kind=kind.value,
                    source="oidc",
                    oidc_issuer=issuer,
                    oidc_subject=subject,
                    email=email,
                )
                row.groups = self._groups(session, _valid_groups(groups))
                session.add(row)
                AuditLog.record(
                    session,
                    f"{kind.value}:provision",
                    caller=None,
                    target_type=kind.value,
                    target_name=name,
                    details={"issuer": issuer, "groups": sorted(_valid_groups(groups))},
                )
            else:
                if row.disabled:
                    raise Unauthenticated("identity is disabled")
                wanted = sorted(_valid_groups(groups))
                if sorted(g.name for g in row.groups) != wanted:
                    row.groups = self._groups(session, wanted)
                if email and row.email != email:
                    row.email = email
            session.flush()
            return self.to_identity(row)

    @staticmethod
    def _free_name(session: Session, wanted: str) -> str:
        base = "".join(c if c.isalnum() or c in "._@-" else "-" for c in wanted)[:120]
        base = base.lstrip("._@-") or "user"
        name, n = base, 1
        while session.scalar(select(IdentityRow.id).where(IdentityRow.name == name)):
            n += 1
            name = f"{base}-{n}"
        return name

    # ------------------------------------------------------------- passwords

    def login(self, name: str, password: str, *, client_addr: str | None = None) -> Identity:
        with self.store.session() as session:
            row = session.scalar(select(IdentityRow).where(IdentityRow.name == name))
            ok = tokens.verify_password(row.password_hash if row else None, password)
            if ok and row is not None and not row.disabled:
                if row.password_hash and tokens.password_needs_rehash(row.password_hash):
                    row.password_hash = tokens.hash_password(password)
                return self.to_identity(row)
            # The failure is committed in a session of its own, then the caller is refused.
            AuditLog.record(
                session,
                "user:login_failed",
                caller=None,
                target_type="user",
                target_name=name[:128],
                client_addr=client_addr,
                outcome="failure",
            )
        raise Unauthenticated("invalid user name or password")

    # ----------------------------------------------------------------- tokens

    def create_token(
        self,
        identity_name: str,
        token_name: str,
        *,
        ttl: timedelta | None = None,
        kind: str = "api",
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> tuple[TokenInfo, str]:
        """Create a token; the plaintext is returned once and never stored."""
        check_simple_name(token_name, "token name")
        max_ttl = timedelta(days=self.token_settings.max_ttl_days)
        if ttl is None:
            ttl = timedelta(days=self.token_settings.default_ttl_days)
        if ttl <= timedelta(0):
            raise InvalidInput("token lifetime must be positive")
        if ttl > max_ttl:
            raise InvalidInput(f"token lifetime exceeds the maximum of {max_ttl.days} days")
        plaintext, parsed = tokens.new_token()
        with self.store.session() as session:
            owner = self._row_by_name(session, identity_name)
            if owner.disabled:
                raise InvalidInput(f"identity {identity_name!r} is disabled")
            if kind == "login":
                token_name = f"{token_name}-{parsed.token_id[:8]}"
            elif session.scalar(
                select(APITokenRow.id).where(
                    APITokenRow.identity_id == owner.id, APITokenRow.name == token_name
                )
            ):
                raise Conflict(f"{identity_name!r} already has a token named {token_name!r}")
            row = APITokenRow(
                id=parsed.token_id,
                identity_id=owner.id,
                name=token_name,
                kind=kind,
                secret_digest=parsed.digest(),
                created_by=caller.principal.id if caller else None,
                expires_at=utcnow() + ttl,
            )
            session.add(row)
            if kind != "login":
                AuditLog.record(
                    session,
                    "token:create",
                    caller=caller,
                    target_type="token",
                    target_name=f"{identity_name}/{token_name}",
                    details={"token_id": parsed.token_id, "expires_at": str(row.expires_at)},
                    client_addr=client_addr,
                )
            session.flush()
            return self._token_info(row, owner), plaintext

    @staticmethod
    def _token_info(row: APITokenRow, owner: IdentityRow) -> TokenInfo:
        return TokenInfo(
            id=row.id,
            name=row.name,
            identity=owner.name,
            identity_kind=owner.kind,
            kind=row.kind,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    def list_tokens(
        self,
        *,
        identity_name: str | None = None,
        include_inactive: bool = False,
        after: str | None = None,
        limit: int = 100,
    ) -> Sequence[TokenInfo]:
        with self.store.session() as session:
            stmt = (
                select(APITokenRow, IdentityRow)
                .join(IdentityRow, APITokenRow.identity_id == IdentityRow.id)
                .order_by(APITokenRow.id)
                .limit(limit)
            )
            if identity_name is not None:
                stmt = stmt.where(IdentityRow.name == identity_name)
            if not include_inactive:
                stmt = stmt.where(APITokenRow.revoked_at.is_(None)).where(
                    (APITokenRow.expires_at.is_(None)) | (APITokenRow.expires_at > utcnow())
                )
            if after:
                stmt = stmt.where(APITokenRow.id > after)
            return [self._token_info(t, i) for t, i in session.execute(stmt)]

    def get_token(self, token_id: str) -> TokenInfo:
        with self.store.session() as session:
            row = session.get(APITokenRow, token_id)
            if row is None:
                raise NotFound(f"no token with id {token_id[:32]!r}")
            owner = session.get(IdentityRow, row.identity_id)
            assert owner is not None
            return self._token_info(row, owner)

    def revoke_token(
        self,
        token_id: str,
        *,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
        require_owner: str | None = None,
    ) -> TokenInfo:
        with self.store.session() as session:
            row = session.get(APITokenRow, token_id)
            if row is None:
                raise NotFound(f"no token with id {token_id[:32]!r}")
            owner = session.get(IdentityRow, row.identity_id)
            assert owner is not None
            if require_owner is not None and owner.id != require_owner:
                raise Forbidden("you may only revoke your own tokens")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                row.revoked_by = caller.principal.id if caller else None
                AuditLog.record(
                    session,
                    "token:revoke",
                    caller=caller,
                    target_type="token",
                    target_name=f"{owner.name}/{row.name}",
                    details={"token_id": row.id},
                    client_addr=client_addr,
                )
            session.flush()
            return self._token_info(row, owner)

    def verify_token(self, token: str, *, client_addr: str | None = None) -> Authenticated:
        """Check an opaque ``jgt_`` token; raises :class:`Unauthenticated`."""
        parsed = tokens.parse_token(token)
        if parsed is None:
            raise Unauthenticated("malformed token")
        now = utcnow()
        with self.store.session() as session:
            row = session.get(APITokenRow, parsed.token_id)
            if row is None or not tokens.digests_match(row.secret_digest, parsed.digest()):
                raise Unauthenticated("unknown token")
            if row.revoked_at is not None:
                raise Unauthenticated("token revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthenticated("token expired")
            owner = session.get(IdentityRow, row.identity_id)
            if owner is None or owner.disabled:
                raise Unauthenticated("identity is disabled")
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                row.last_used_at = now
                row.last_used_addr = client_addr
            return Authenticated(
                principal=self.to_identity(owner),
                method=AuthMethod.LOGIN if row.kind == "login" else AuthMethod.API_TOKEN,
                token_id=row.id,
                expires_at=row.expires_at,
            )

    def count(self) -> int:
        with self.store.session() as session:
            return session.scalar(select(func.count()).select_from(IdentityRow)) or 0


def _valid_groups(groups: Iterable[str]) -> list[str]:
    """Keep only group names that fit our alphabet; IdP groups can be anything."""
    result = []
    for group in groups:
        try:
            result.append(check_simple_name(group, "group name"))
        except InvalidInput:
            continue
    return result
