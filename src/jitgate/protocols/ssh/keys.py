"""Public keys registered to identities: how people and agents log in to the SSH listener.

A key belongs to exactly one identity (its SHA-256 fingerprint is unique). Only the
public half is stored; adding, listing and removing keys is audited like tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncssh
from sqlalchemy import select

from jitgate.audit.log import AuditLog
from jitgate.errors import Conflict, InvalidInput, NotFound
from jitgate.identity.principal import Authenticated, AuthMethod, Identity
from jitgate.identity.service import IdentityService
from jitgate.store.db import Store
from jitgate.store.models import IdentityRow, SSHKeyRow, utcnow

MAX_KEYS_PER_IDENTITY = 100


@dataclass(frozen=True, slots=True)
class SSHKeyInfo:
    id: str
    identity: str
    name: str
    algorithm: str
    fingerprint: str
    public_key: str
    created_at: datetime
    last_used_at: datetime | None


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA… comment``)."""
    text = text.strip()
    if not text or len(text) > 16384:
        raise InvalidInput("give one public key in OpenSSH format")
    if "PRIVATE KEY" in text:
        raise InvalidInput("that is a private key: give the public key (.pub)")
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise InvalidInput(f"not a public key: {exc}") from None


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


class SSHKeyService:
    def __init__(self, store: Store, identities: IdentityService) -> None:
        self.store = store
        self.identities = identities

    @staticmethod
    def _info(row: SSHKeyRow, owner: str) -> SSHKeyInfo:
        return SSHKeyInfo(
            id=row.id,
            identity=owner,
            name=row.name,
            algorithm=row.algorithm,
            fingerprint=row.fingerprint,
            public_key=row.public_key,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )

    def add(
        self,
        identity: str,
        public_key: str,
        *,
        name: str | None = None,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> SSHKeyInfo:
        key = parse_public_key(public_key)
        fp = fingerprint(key)
        comment = key.get_comment() or ""
        name = (name or comment or fp[7:19]).strip()[:128]
        exported = key.export_public_key("openssh").decode().strip()
        with self.store.session() as session:
            owner = session.scalar(select(IdentityRow).where(IdentityRow.name == identity))
            if owner is None:
                raise NotFound(f"no identity named {identity[:128]!r}")
            if session.scalar(select(SSHKeyRow).where(SSHKeyRow.fingerprint == fp)):
                raise Conflict(f"the key {fp} is already registered")
            existing = session.scalars(
                select(SSHKeyRow).where(SSHKeyRow.identity_id == owner.id)
            ).all()
            if len(existing) >= MAX_KEYS_PER_IDENTITY:
                raise InvalidInput(f"at most {MAX_KEYS_PER_IDENTITY} keys per identity")
            if any(r.name == name for r in existing):
                raise Conflict(f"{identity} already has a key named {name!r}")
            row = SSHKeyRow(
                id=str(uuid.uuid4()),
                identity_id=owner.id,
                name=name,
                algorithm=key.get_algorithm(),
                fingerprint=fp,
                public_key=exported,
                created_by=caller.principal.id if caller else None,
            )
            session.add(row)
            AuditLog.record(
                session,
                "ssh_key:add",
                caller=caller,
                target_type="identity",
                target_name=identity,
                details={"fingerprint": fp, "name": name},
                client_addr=client_addr,
            )
            session.flush()
            return self._info(row, identity)

    def list(self, identity: str | None = None) -> Sequence[SSHKeyInfo]:
        with self.store.session() as session:
            query = select(SSHKeyRow, IdentityRow.name).join(
                IdentityRow, IdentityRow.id == SSHKeyRow.identity_id
            )
            if identity is not None:
                query = query.where(IdentityRow.name == identity)
            rows = session.execute(query.order_by(IdentityRow.name, SSHKeyRow.created_at)).all()
            return [self._info(row, owner) for row, owner in rows]

    def get(self, key_id: str) -> SSHKeyInfo:
        with self.store.session() as session:
            found = session.execute(
                select(SSHKeyRow, IdentityRow.name)
                .join(IdentityRow, IdentityRow.id == SSHKeyRow.identity_id)
                .where(SSHKeyRow.id == key_id)
            ).first()
            if found is None:
                raise NotFound(f"no SSH key {key_id[:64]!r}")
            return self._info(found[0], found[1])

    def remove(
        self, key_id: str, *, caller: Authenticated | None = None, client_addr: str | None = None
    ) -> SSHKeyInfo:
        info = self.get(key_id)
        with self.store.session() as session:
            row = session.get(SSHKeyRow, key_id)
            if row is not None:
                session.delete(row)
            AuditLog.record(
                session,
                "ssh_key:remove",
                caller=caller,
                target_type="identity",
                target_name=info.identity,
                details={"fingerprint": info.fingerprint, "name": info.name},
                client_addr=client_addr,
            )
        return info

    def authenticate(self, key: asyncssh.SSHKey) -> Authenticated | None:
        """The identity a public key logs in as (None: unknown key or disabled identity)."""
        fp = fingerprint(key)
        with self.store.session() as session:
            row = session.scalar(select(SSHKeyRow).where(SSHKeyRow.fingerprint == fp))
            if row is None:
                return None
            owner = session.get(IdentityRow, row.identity_id)
            if owner is None or owner.disabled:
                return None
            row.last_used_at = utcnow()
            identity: Identity = self.identities.to_identity(owner)
        return Authenticated(identity, AuthMethod.LOGIN, extra={"ssh_key": fp})
