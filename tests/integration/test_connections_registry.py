"""Connection CRUD with credentials sealed at rest — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from jitgate.connections.registry import ConnectionRegistry
from jitgate.connections.types import ConnectionType, Credential, CredentialKind, TLSMode
from jitgate.connections.vault import MasterKey, Vault
from jitgate.errors import Conflict, InvalidInput, NotFound, Unavailable
from jitgate.store.db import Store
from jitgate.store.models import ConnectionRow

SECRET = "Pl4nted-S3cret-value-xyz"


@pytest.fixture
def registry(store: Store) -> ConnectionRegistry:
    return ConnectionRegistry(store, Vault([MasterKey.generate()]))


def test_crud_and_credential_never_in_info(registry: ConnectionRegistry) -> None:
    info = registry.create(
        name="prod-db",
        type=ConnectionType.POSTGRES,
        host="db.internal",
        database="app",
        username="app",
        tags={"env": "prod"},
        credential=Credential(CredentialKind.PASSWORD, SECRET),
    )
    assert info.port == 5432 and info.tls_mode is TLSMode.PREFER
    assert info.credential_kind is CredentialKind.PASSWORD
    assert SECRET not in repr(info)
    assert registry.get("prod-db").tags == {"env": "prod"}
    registry.update("prod-db", port=5433, tags={"env": "staging"})
    assert registry.get("prod-db").port == 5433
    assert [c.name for c in registry.list(tags={"env": "staging"})] == ["prod-db"]
    assert registry.list(tags={"env": "prod"}) == []
    registry.delete("prod-db")
    with pytest.raises(NotFound):
        registry.get("prod-db")


def test_credential_is_encrypted_at_rest(registry: ConnectionRegistry, store: Store) -> None:
    registry.create(
        name="db",
        type=ConnectionType.POSTGRES,
        host="h",
        credential=Credential(CredentialKind.PASSWORD, SECRET),
    )
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM connections")).all()
    assert SECRET.encode() not in repr(rows).encode()
    assert SECRET not in repr(rows)
    _info, credential = registry.resolve("db")
    assert credential is not None and credential.secret == SECRET
    assert SECRET not in repr(credential) and SECRET not in str(credential)


def test_blob_moved_to_another_connection_does_not_open(
    registry: ConnectionRegistry, store: Store
) -> None:
    registry.create(
        name="a",
        type=ConnectionType.POSTGRES,
        host="h",
        credential=Credential(CredentialKind.PASSWORD, SECRET),
    )
    registry.create(name="b", type=ConnectionType.POSTGRES, host="h")
    with store.session() as session:
        a = session.scalar(select(ConnectionRow).where(ConnectionRow.name == "a"))
        b = session.scalar(select(ConnectionRow).where(ConnectionRow.name == "b"))
        assert a is not None and b is not None
        b.credential_blob, b.credential_kind = a.credential_blob, a.credential_kind
    with pytest.raises(Unavailable, match="cannot be opened"):
        registry.resolve("b")


def test_key_rotation_reseals_everything(registry: ConnectionRegistry) -> None:
    for name in ("a", "b"):
        registry.create(
            name=name,
            type=ConnectionType.SSH,
            host="h",
            credential=Credential(CredentialKind.PRIVATE_KEY, SECRET, "pp"),
        )
    old_vault = registry.vault
    new_key = MasterKey.generate()
    assert registry.reseal_all(Vault([new_key, *old_vault._keys])) == 2
    only_new = ConnectionRegistry(registry.store, Vault([new_key]))
    _info, credential = only_new.resolve("a")
    assert credential is not None
    assert (credential.secret, credential.passphrase) == (SECRET, "pp")


def test_bad_input(registry: ConnectionRegistry) -> None:
    registry.create(name="db", type=ConnectionType.POSTGRES, host="h")
    with pytest.raises(Conflict):
        registry.create(name="db", type=ConnectionType.POSTGRES, host="h")
    with pytest.raises(InvalidInput):
        registry.create(
            name="x'; DROP TABLE connections;--", type=ConnectionType.POSTGRES, host="h"
        )
    with pytest.raises(InvalidInput):
        registry.create(name="y", type=ConnectionType.POSTGRES, host="bad host")
    with pytest.raises(InvalidInput):
        registry.create(name="z", type=ConnectionType.POSTGRES, host="h", port=0)
    with pytest.raises(InvalidInput):
        registry.create(name="w", type=ConnectionType.POSTGRES, host="h", tags={"bad key": "v"})
    assert [c.name for c in registry.list()] == ["db"]


def test_clear_credential(registry: ConnectionRegistry) -> None:
    registry.create(
        name="db",
        type=ConnectionType.POSTGRES,
        host="h",
        credential=Credential(CredentialKind.PASSWORD, SECRET),
    )
    registry.update("db", credential=None)
    info, credential = registry.resolve("db")
    assert credential is None and info.credential_kind is None
