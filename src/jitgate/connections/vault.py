"""Credential vault: AES-256-GCM encryption of target credentials under the master key.

Theory of operation
-------------------
The master key material is a *keyring*: one or more 32-byte keys, the first of which is
current. A key's id is the first 8 bytes of SHA-256 over the key, hex-encoded, so no id
needs to be stored beside the key. A sealed credential is::

    b"JGV1" | key_id (8 bytes) | nonce (12 bytes) | ciphertext + tag

and the associated data binds it to the owning record (``"connection:<id>"``), so a blob
copied onto another connection does not decrypt. Rotation adds a new current key,
re-seals every blob under it, then retires the old keys.

Keyring text form (file ``DATA_DIR/master.key`` or ``JITGATE_MASTER_KEY``): base64 keys
separated by newlines or commas, current key first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"JGV1"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_BYTES = 8


class VaultError(Exception):
    """A credential cannot be sealed or opened. The message never contains key material."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise VaultError(f"a master key must be {KEY_BYTES} bytes")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.material).digest()[:_KEY_ID_BYTES].hex()

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def encode(self) -> str:
        return base64.b64encode(self.material).decode("ascii")

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"


def parse_keyring(text: str) -> list[MasterKey]:
    keys = []
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        try:
            material = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            try:
                material = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            except (binascii.Error, ValueError) as exc:
                raise VaultError("master key is not valid base64") from exc
        keys.append(MasterKey(material))
    if not keys:
        raise VaultError("no master key given")
    return keys


def format_keyring(keys: Iterable[MasterKey]) -> str:
    lines = ["# jitgate master keyring: current key first. Keep this file secret."]
    lines += [key.encode() for key in keys]
    return "\n".join(lines) + "\n"


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Vault:
    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise VaultError("the vault needs at least one master key")
        self._keys = list(keys)
        self._by_id = {key.key_id: AESGCM(key.material) for key in self._keys}

    @property
    def current_key_id(self) -> str:
        return self._keys[0].key_id

    @property
    def key_ids(self) -> list[str]:
        return [key.key_id for key in self._keys]

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        key = self._keys[0]
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._by_id[key.key_id].encrypt(nonce, plaintext, context.encode())
        return MAGIC + bytes.fromhex(key.key_id) + nonce + ciphertext

    def open(self, blob: bytes, *, context: str) -> bytes:
        header = len(MAGIC) + _KEY_ID_BYTES + NONCE_BYTES
        if len(blob) < header + 16 or not blob.startswith(MAGIC):
            raise VaultError("sealed credential is malformed")
        key_id = blob[len(MAGIC) : len(MAGIC) + _KEY_ID_BYTES].hex()
        aead = self._by_id.get(key_id)
        if aead is None:
            raise VaultError(f"sealed with master key {key_id}, which is not in the keyring")
        nonce = blob[len(MAGIC) + _KEY_ID_BYTES : header]
        try:
            return aead.decrypt(nonce, blob[header:], context.encode())
        except InvalidTag as exc:
            raise VaultError("sealed credential failed authentication") from exc

    def derive(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose, derived from the *oldest* master key so that it
        survives rotation of the current one (e.g. deterministic masking tokens)."""
        import hmac as _hmac

        return _hmac.new(self._keys[-1].material, b"jitgate:" + label, "sha256").digest()

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        return blob[len(MAGIC) : len(MAGIC) + _KEY_ID_BYTES].hex()

    def reseal(self, blob: bytes, *, context: str) -> bytes:
        """Open with whichever key sealed it; seal again under the current key."""
        return self.seal(self.open(blob, context=context), context=context)
