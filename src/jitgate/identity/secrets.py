"""Opaque bearer tokens and password hashes.

Token format: ``jgt_`` + 16 hex characters (the token id, the database key) + 40 base62
characters (the secret). Only SHA-256 of the secret is stored — the secret has 238 bits
of entropy, so a slow hash adds nothing — and it is compared in constant time. The
format is safe inside libpq connection strings, SSH passwords and HTTP headers.

Passwords of local users are hashed with Argon2id (argon2-cffi defaults).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "jgt_"
_ID_LEN = 16
_SECRET_LEN = 40
_ALPHABET = string.ascii_letters + string.digits
TOKEN_LEN = len(TOKEN_PREFIX) + _ID_LEN + _SECRET_LEN


@dataclass(frozen=True, slots=True)
class ParsedToken:
    token_id: str
    secret: str

    def digest(self) -> bytes:
        return secret_digest(self.secret)


def new_token() -> tuple[str, ParsedToken]:
    token_id = secrets.token_hex(_ID_LEN // 2)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))
    return TOKEN_PREFIX + token_id + secret, ParsedToken(token_id, secret)


def parse_token(token: str) -> ParsedToken | None:
    """Split an opaque token; ``None`` when it is not in jitgate's format."""
    if len(token) != TOKEN_LEN or not token.startswith(TOKEN_PREFIX):
        return None
    token_id = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _ID_LEN]
    secret = token[len(TOKEN_PREFIX) + _ID_LEN :]
    if any(c not in "0123456789abcdef" for c in token_id):
        return None
    if any(c not in _ALPHABET for c in secret):
        return None
    return ParsedToken(token_id, secret)


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def digests_match(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


_hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not reveal the name.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
