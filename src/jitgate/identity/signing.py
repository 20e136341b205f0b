"""The gateway's own Ed25519 signing key.

It signs delegated tokens (JWT, alg ``Ed25519``) and, later, the digests that close
session recordings. Its public half is published by the API so anyone can verify.
Stored as PKCS#8 PEM in ``DATA_DIR/signing.key`` (mode 0600), generated on first start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from jitgate.connections.vault import write_secret_file

ALGORITHM = "Ed25519"


class SigningKey:
    def __init__(self, key: OKPKey) -> None:
        self._key = key
        self.key_id = key.thumbprint()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(OKPKey.generate_key("Ed25519"))

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            return cls(OKPKey.import_key(path.read_bytes()))
        key = cls.generate()
        write_secret_file(path, key._key.as_pem(private=True).decode("ascii"))
        return key

    def public_jwk(self) -> dict[str, Any]:
        jwk = dict(self._key.as_dict(private=False))
        jwk.update({"kid": self.key_id, "alg": ALGORITHM, "use": "sig"})
        return jwk

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        header = {"alg": ALGORITHM, "kid": self.key_id, "typ": "JWT"}
        return jwt.encode(header, claims, self._key, algorithms=[ALGORITHM])

    def verify_jwt(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (header, claims) when the signature is ours; raise ValueError otherwise."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            raise ValueError("bad signature") from exc
        if decoded.header.get("kid") != self.key_id:
            raise ValueError("unknown signing key")
        return dict(decoded.header), dict(decoded.claims)

    def sign_bytes(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        private = self._key.private_key
        assert isinstance(private, Ed25519PrivateKey)
        return private.sign(data)
