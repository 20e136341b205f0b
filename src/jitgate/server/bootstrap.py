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
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from joserfc.errors import JoseError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from jitgate.config import ConfigError, Settings
from jitgate.connections.vault import (
    MasterKey,
    Vault,
    VaultError,
    format_keyring,
    parse_keyring,
    write_secret_file,
)
from jitgate.errors import Unavailable
from jitgate.identity.principal import IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.identity.signing import SigningKey
from jitgate.server.tls import generate_self_signed, server_context
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
    if settings.master_key is not None:
        try:
            return parse_keyring(settings.master_key.get_secret_value())
        except VaultError as exc:
            raise ConfigError(f"master_key: {exc}") from None
    if paths.master_key.exists():
        try:
            return parse_keyring(paths.master_key.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"master key file {paths.master_key}: cannot read it: {exc.strerror or exc}"
            ) from None
        except (VaultError, UnicodeDecodeError) as exc:
            reason = exc if isinstance(exc, VaultError) else "not a text file"
            raise ConfigError(f"master key file {paths.master_key}: {reason}") from None
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
        check_tls_pair(
            settings.tls.cert_file, settings.tls.key_file, "tls.cert_file", "tls.key_file"
        )
        return settings.tls.cert_file, settings.tls.key_file
    cert, key = paths.tls_dir / "gateway.crt", paths.tls_dir / "gateway.key"
    if not (cert.exists() and key.exists()):
        paths.tls_dir.mkdir(exist_ok=True, mode=0o700)
        generate_self_signed(cert, key)
        log.info("generated a self-signed TLS certificate in %s", cert)
    check_tls_pair(cert, key, "TLS certificate file", "TLS key file")
    return cert, key


def check_tls_pair(cert: Path, key: Path, cert_name: str, key_name: str) -> None:
    """Load the pair as the listeners will; a problem becomes one line naming the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for name, path in ((cert_name, cert), (key_name, key)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
        try:
            if path is cert:
                x509.load_pem_x509_certificate(data)
            else:
                load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            what = "a PEM certificate" if path is cert else "an unencrypted PEM private key"
            raise ConfigError(f"{name}: {path} is not {what}") from None
    try:
        server_context(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{key_name}: {key} does not match the certificate {cert} ({exc.reason})"
        ) from None


def load_signing_key(paths: DataPaths) -> SigningKey:
    try:
        return SigningKey.load_or_create(paths.signing_key)
    except OSError as exc:
        raise ConfigError(
            f"signing key file {paths.signing_key}: cannot use it: {exc.strerror or exc}"
        ) from None
    except (ValueError, TypeError, JoseError):
        raise ConfigError(
            f"signing key file {paths.signing_key}: not an Ed25519 private key in PEM"
        ) from None


def open_store(settings: Settings) -> Store:
    """Connect to the store (a problem is a :class:`ConfigError` naming ``database_url``)
    and migrate it to head under the start-up lock."""
    url = settings.effective_database_url
    shown = _shown_url(url)
    try:
        store = Store.from_url(url)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise ConfigError(f"database_url: {shown} cannot be used: {exc}") from None
    try:
        with store.engine.connect():
            pass
        with store.startup_lock():
            migrate.upgrade(store.engine)
    except (SQLAlchemyError, Unavailable) as exc:
        store.dispose()
        raise ConfigError(
            f"database_url: cannot use the store at {shown}: {_reason(exc)}"
        ) from None
    return store


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


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
