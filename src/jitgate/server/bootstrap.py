"""First start and every start: data directory, keys, certificate, store, admin identity.

On an empty data directory this creates (all mode 0600, directory 0700):

* ``master.key``   — the vault keyring (unless ``JITGATE_MASTER_KEY`` is set);
* ``signing.key``  — the gateway's Ed25519 signing key;
* ``tls/gateway.crt`` + ``tls/gateway.key`` — self-signed listener certificate
  (unless ``tls.cert_file``/``tls.key_file`` are configured);
* ``jitgate.db``   — the SQLite store (unless ``database_url`` is set), migrated to head;
* an identity ``admin`` in group ``admins`` and its token in ``admin.token``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from jitgate.config import ConfigError, Settings
from jitgate.connections.vault import (
    MasterKey,
    Vault,
    VaultError,
    format_keyring,
    parse_keyring,
    write_secret_file,
)
from jitgate.identity.principal import IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.server.tls import generate_self_signed
from jitgate.store import migrate
from jitgate.store.db import Store

log = logging.getLogger("jitgate.bootstrap")

ADMIN_TOKEN_FILE = "admin.token"
MASTER_KEY_FILE = "master.key"
SIGNING_KEY_FILE = "signing.key"
ADMIN_GROUP = "admins"


@dataclass(frozen=True, slots=True)
class DataPaths:
    root: Path

    @property
    def master_key(self) -> Path:
        return self.root / MASTER_KEY_FILE

    @property
    def signing_key(self) -> Path:
        return self.root / SIGNING_KEY_FILE

    @property
    def admin_token(self) -> Path:
        return self.root / ADMIN_TOKEN_FILE

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def ssh_host_key(self) -> Path:
        """The SSH listener's host key (generated on first start, then stable)."""
        return self.root / "ssh" / "host_ed25519_key"


def prepare_data_dir(settings: Settings) -> DataPaths:
    root = settings.data_dir.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot create {root}: {exc.strerror}") from exc
    if not os.access(root, os.W_OK):
        raise ConfigError(f"data_dir: {root} is not writable")
    return DataPaths(root)


def load_keyring(settings: Settings, paths: DataPaths) -> list[MasterKey]:
    try:
        if settings.master_key is not None:
            return parse_keyring(settings.master_key.get_secret_value())
        if paths.master_key.exists():
            return parse_keyring(paths.master_key.read_text(encoding="utf-8"))
    except VaultError as exc:
        raise ConfigError(f"master_key: {exc}") from None
    key = MasterKey.generate()
    write_secret_file(paths.master_key, format_keyring([key]))
    log.info("generated a new master key in %s", paths.master_key)
    return [key]


def tls_files(settings: Settings, paths: DataPaths) -> tuple[Path, Path]:
    if settings.tls.cert_file or settings.tls.key_file:
        if not (settings.tls.cert_file and settings.tls.key_file):
            raise ConfigError("tls: cert_file and key_file must be given together")
        for name, path in (
            ("tls.cert_file", settings.tls.cert_file),
            ("tls.key_file", settings.tls.key_file),
        ):
            if not path.is_file():
                raise ConfigError(f"{name}: {path} does not exist")
        return settings.tls.cert_file, settings.tls.key_file
    cert, key = paths.tls_dir / "gateway.crt", paths.tls_dir / "gateway.key"
    if not (cert.exists() and key.exists()):
        paths.tls_dir.mkdir(exist_ok=True, mode=0o700)
        generate_self_signed(cert, key)
        log.info("generated a self-signed TLS certificate in %s", cert)
    return cert, key


def open_store(settings: Settings) -> Store:
    store = Store.from_url(settings.effective_database_url)
    migrate.upgrade(store.engine)
    return store


def ensure_admin(settings: Settings, paths: DataPaths, identities: IdentityService) -> str | None:
    """Create the first admin on an empty store; return the token file written, if any."""
    if identities.count() > 0:
        return None
    identities.create_identity(
        settings.admin_name,
        kind=IdentityKind.USER,
        groups=[ADMIN_GROUP],
        display_name="jitgate administrator",
    )
    _info, token = identities.create_token(
        settings.admin_name,
        "bootstrap",
        ttl=timedelta(days=settings.tokens.max_ttl_days),
    )
    write_secret_file(paths.admin_token, token + "\n")
    return str(paths.admin_token)


def make_vault(keys: list[MasterKey]) -> Vault:
    return Vault(keys)
