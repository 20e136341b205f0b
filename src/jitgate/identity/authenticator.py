"""One entry point for every bearer credential the gateway accepts.

``authenticate(token)`` routes by shape:

* ``jgt_…`` — an opaque API/login token (:mod:`jitgate.identity.service`);
* a JWT issued by this gateway — a delegated token (:mod:`jitgate.identity.delegation`);
* any other JWT — an access or ID token of the configured OIDC issuer
  (:mod:`jitgate.identity.oidc`); its subject is provisioned as an identity on first use.

Positive results are cached briefly (``tokens.cache_seconds``) under a digest of the
token, never the token itself, so a connection storm does not become a database storm.
Revocations made through this process clear the cache at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from jitgate.errors import Unauthenticated
from jitgate.identity.delegation import ISSUER as DELEGATION_ISSUER
from jitgate.identity.delegation import DelegationService
from jitgate.identity.principal import Authenticated, AuthMethod, IdentityKind
from jitgate.identity.secrets import TOKEN_PREFIX
from jitgate.identity.service import IdentityService

if TYPE_CHECKING:
    from jitgate.identity.oidc import OIDCValidator

MAX_TOKEN_LENGTH = 16 * 1024
_CACHE_ENTRIES = 10_000


def _jwt_issuer(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


class Authenticator:
    def __init__(
        self,
        identities: IdentityService,
        delegations: DelegationService,
        oidc: OIDCValidator | None = None,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identities = identities
        self.delegations = delegations
        self.oidc = oidc
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[Authenticated, float]] = OrderedDict()
        self._lock = threading.Lock()
        delegations.authenticate = self.authenticate  # token exchange checks tokens as we do

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def authenticate(self, token: str, *, client_addr: str | None = None) -> Authenticated:
        token = token.strip()
        if not token:
            raise Unauthenticated("no credential given")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("malformed token")
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        if self.cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(key)
            if (
                hit is not None
                and hit[1] > now
                and (hit[0].expires_at is None or hit[0].expires_at.timestamp() > time.time())
            ):
                return hit[0]
        result = self._authenticate(token, client_addr)
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[key] = (result, now + self.cache_seconds)
                self._cache.move_to_end(key)
                while len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return result

    def _authenticate(self, token: str, client_addr: str | None) -> Authenticated:
        if token.startswith(TOKEN_PREFIX):
            return self.identities.verify_token(token, client_addr=client_addr)
        issuer = _jwt_issuer(token)
        if issuer is None:
            raise Unauthenticated("malformed token")
        if issuer == DELEGATION_ISSUER:
            return self.delegations.verify(token)
        if self.oidc is None:
            raise Unauthenticated("unknown token issuer")
        claims = self.oidc.validate(token)
        identity = self.identities.ensure_external(
            issuer=claims.issuer,
            subject=claims.subject,
            username=claims.username,
            kind=IdentityKind.AGENT if claims.is_agent else IdentityKind.USER,
            groups=claims.groups,
            email=claims.email,
        )
        return Authenticated(
            principal=identity,
            method=AuthMethod.OIDC,
            token_id=claims.token_id,
            expires_at=claims.expires_at,
        )
