"""The connection registry: CRUD for targets, credentials sealed by the vault.

Credentials go in and never come out through this API's read methods;
:meth:`ConnectionRegistry.resolve` is the only way to open one, and only the protocol
data paths call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from jitgate.audit.log import AuditLog
from jitgate.connections.types import (
    DEFAULT_PORTS,
    ConnectionInfo,
    ConnectionType,
    Credential,
    CredentialKind,
    TLSMode,
    check_host,
    check_options,
    check_tags,
)
from jitgate.connections.vault import Vault, VaultError
from jitgate.errors import Conflict, InvalidInput, NotFound, Unavailable
from jitgate.identity.names import check_simple_name
from jitgate.identity.principal import Authenticated
from jitgate.masking.names import REVISION as MASK_REVISION
from jitgate.masking.names import check_connection_options
from jitgate.store import revisions
from jitgate.store.db import Store
from jitgate.store.models import ConnectionRow

_UNSET: Any = object()


def _context(row_id: str) -> str:
    return f"connection:{row_id}"


def _info(row: ConnectionRow) -> ConnectionInfo:
    return ConnectionInfo(
        id=row.id,
        name=row.name,
        type=ConnectionType(row.type),
        host=row.host,
        port=row.port,
        database=row.database,
        username=row.username,
        tls_mode=TLSMode(row.tls_mode),
        tls_ca=row.tls_ca,
        tls_server_name=row.tls_server_name,
        tags=dict(row.tags or {}),
        options=dict(row.options or {}),
        description=row.description,
        credential_kind=CredentialKind(row.credential_kind) if row.credential_kind else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidInput("port must be between 1 and 65535")
    return port


class ConnectionRegistry:
    def __init__(self, store: Store, vault: Vault) -> None:
        self.store = store
        self.vault = vault

    def create(
        self,
        *,
        name: str,
        type: ConnectionType,
        host: str,
        port: int | None = None,
        database: str | None = None,
        username: str | None = None,
        tls_mode: TLSMode = TLSMode.PREFER,
        tls_ca: str | None = None,
        tls_server_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        description: str | None = None,
        credential: Credential | None = None,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> ConnectionInfo:
        check_simple_name(name, "connection name")
        row = ConnectionRow(
            id=str(uuid.uuid4()),
            name=name,
            type=type.value,
            host=check_host(host),
            port=_check_port(port if port is not None else DEFAULT_PORTS[type]),
            database=database,
            username=username,
            tls_mode=tls_mode.value,
            tls_ca=tls_ca,
            tls_server_name=tls_server_name,
            tags=check_tags(dict(tags or {})),
            options=check_options(dict(options or {})),
            description=description,
            created_by=caller.principal.id if caller else None,
        )
        if credential is not None:
            self._seal_into(row, credential)
        with self.store.session() as session:
            if session.scalar(select(ConnectionRow.id).where(ConnectionRow.name == name)):
                raise Conflict(f"a connection named {name!r} already exists")
            check_connection_options(session, row.options)
            session.add(row)
            AuditLog.record(
                session,
                "connection:create",
                caller=caller,
                target_type="connection",
                target_name=name,
                details={
                    "type": type.value,
                    "host": row.host,
                    "port": row.port,
                    "tags": row.tags,
                    "credential": credential.kind.value if credential else None,
                },
                client_addr=client_addr,
            )
            try:
                session.flush()
            except IntegrityError as exc:
                raise Conflict(f"a connection named {name!r} already exists") from exc
            return _info(row)

    def _seal_into(self, row: ConnectionRow, credential: Credential) -> None:
        row.credential_kind = credential.kind.value
        row.credential_blob = self.vault.seal(credential.to_bytes(), context=_context(row.id))
        row.credential_key_id = self.vault.current_key_id

    @staticmethod
    def _row(session: Any, name: str) -> ConnectionRow:
        row: ConnectionRow | None = session.scalar(
            select(ConnectionRow).where(ConnectionRow.name == name)
        )
        if row is None:
            raise NotFound(f"no connection named {name[:128]!r}")
        return row

    def get(self, name: str) -> ConnectionInfo:
        with self.store.session() as session:
            return _info(self._row(session, name))

    def list(
        self,
        *,
        type: ConnectionType | None = None,
        tags: Mapping[str, str] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Sequence[ConnectionInfo]:
        with self.store.session() as session:
            stmt = select(ConnectionRow).order_by(ConnectionRow.name)
            if type is not None:
                stmt = stmt.where(ConnectionRow.type == type.value)
            if after:
                stmt = stmt.where(ConnectionRow.name > after)
            result: list[ConnectionInfo] = []
            # Tags are JSON; filtered here so the query works the same on every backend.
            for row in session.scalars(stmt):
                if tags and any((row.tags or {}).get(k) != v for k, v in tags.items()):
                    continue
                result.append(_info(row))
                if len(result) >= limit:
                    break
            return result

    def update(
        self,
        name: str,
        *,
        host: str = _UNSET,
        port: int = _UNSET,
        database: str | None = _UNSET,
        username: str | None = _UNSET,
        tls_mode: TLSMode = _UNSET,
        tls_ca: str | None = _UNSET,
        tls_server_name: str | None = _UNSET,
        tags: Mapping[str, str] = _UNSET,
        options: Mapping[str, Any] = _UNSET,
        description: str | None = _UNSET,
        credential: Credential | None = _UNSET,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> ConnectionInfo:
        with self.store.session() as session:
            row = self._row(session, name)
            changed = []
            simple = {
                "database": database,
                "username": username,
                "tls_ca": tls_ca,
                "tls_server_name": tls_server_name,
                "description": description,
            }
            for attr, value in simple.items():
                if value is not _UNSET:
                    setattr(row, attr, value)
                    changed.append(attr)
            if host is not _UNSET:
                row.host = check_host(host)
                changed.append("host")
            if port is not _UNSET:
                row.port = _check_port(port)
                changed.append("port")
            if tls_mode is not _UNSET:
                row.tls_mode = TLSMode(tls_mode).value
                changed.append("tls_mode")
            if tags is not _UNSET:
                row.tags = check_tags(dict(tags))
                changed.append("tags")
            if options is not _UNSET:
                checked = check_options(dict(options))
                if checked.get("mask_profile") != (row.options or {}).get("mask_profile"):
                    check_connection_options(session, checked)
                    revisions.bump(session, MASK_REVISION)  # open sessions switch profile
                row.options = checked
                changed.append("options")
            if credential is not _UNSET:
                if credential is None:
                    row.credential_kind = row.credential_blob = row.credential_key_id = None
                else:
                    self._seal_into(row, credential)
                changed.append("credential")
            AuditLog.record(
                session,
                "connection:update",
                caller=caller,
                target_type="connection",
                target_name=name,
                details={"changed": changed},
                client_addr=client_addr,
            )
            session.flush()
            return _info(row)

    def delete(
        self, name: str, *, caller: Authenticated | None = None, client_addr: str | None = None
    ) -> None:
        with self.store.session() as session:
            row = self._row(session, name)
            session.delete(row)
            AuditLog.record(
                session,
                "connection:delete",
                caller=caller,
                target_type="connection",
                target_name=name,
                client_addr=client_addr,
            )

    def resolve(self, name: str) -> tuple[ConnectionInfo, Credential | None]:
        """The data path's view: the connection and its opened credential."""
        with self.store.session() as session:
            row = self._row(session, name)
            info = _info(row)
            if row.credential_blob is None:
                return info, None
            try:
                raw = self.vault.open(row.credential_blob, context=_context(row.id))
            except VaultError as exc:
                raise Unavailable(f"credential of {name!r} cannot be opened: {exc}") from None
            return info, Credential.from_bytes(raw)

    def reseal_all(self, vault: Vault) -> int:
        """Re-encrypt every credential under ``vault``'s current key (key rotation)."""
        count = 0
        with self.store.session() as session:
            for row in session.scalars(
                select(ConnectionRow).where(ConnectionRow.credential_blob.is_not(None))
            ):
                assert row.credential_blob is not None
                row.credential_blob = vault.reseal(row.credential_blob, context=_context(row.id))
                row.credential_key_id = vault.current_key_id
                count += 1
        self.vault = vault
        return count
