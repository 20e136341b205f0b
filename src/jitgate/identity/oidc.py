"""Validate JWTs (access and ID tokens) issued by a configured OpenID Connect provider.

:class:`OIDCValidator` turns a bearer JWT into :class:`OIDCClaims` or raises
:class:`~jitgate.errors.Unauthenticated` with a short reason that is safe to show (never the
token). An identity provider that cannot be reached raises :class:`~jitgate.errors.Unavailable`.

Theory of operation
-------------------
1. *Shape.* The token must be a compact JWS: three base64url segments whose header and
   payload are JSON objects (``malformed token``). JWE and JSON serialisations are refused.
2. *Header.* ``alg`` must be in ``OIDCSettings.algorithms`` and is never ``none`` nor an HMAC
   algorithm, whatever the settings say (``algorithm not allowed``) — this closes the
   classic confusion where an attacker signs with HS256 using the public RSA key as the
   secret. A ``crit`` header is refused, since this validator understands no extension
   (``unsupported critical header``); so is ``b64`` (RFC 7797). ``typ``, when present, must
   be ``JWT`` or ``at+jwt`` (``unsupported token type``): logout tokens, DPoP proofs and
   other JWTs from the same issuer are not bearer credentials. Keys named by the token
   itself (``jwk``, ``jku``, ``x5u``, ``x5c``) are ignored: only the issuer's JWKS counts.
3. *Issuer pre-check.* The unverified ``iss`` must equal the configured issuer (``wrong
   issuer``) before any key is looked up, so tokens of other issuers never cause JWKS
   fetches.
4. *Key.* Discovery (``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must
   equal the configured one exactly) gives ``jwks_uri``; the JWKS is cached for
   ``jwks_cache_seconds``. The key is the one whose ``kid`` matches (a token without
   ``kid`` is accepted only when exactly one key fits its ``alg``). An unknown ``kid``
   triggers a refetch, at most one per ``jwks_refresh_min_interval`` seconds whatever the
   number of tokens or threads, so a flood of forged ``kid`` values cannot hammer the
   identity provider (``unknown signing key``). Failed fetches count against the same
   interval. The key type (and curve) must fit ``alg`` and the key's own ``alg``/``use``
   must not contradict it (``signing key does not match algorithm``). Symmetric (``oct``)
   and encryption keys in the JWKS are never used, nor RSA keys under 2048 bits.
5. *Signature* by joserfc with exactly that key and algorithm (``bad signature``).
6. *Claims.* ``iss`` (``wrong issuer``), ``aud`` — a string or a list, one of
   ``settings.audiences`` (``wrong audience``), ``exp`` required (``token has no expiry``)
   and not passed (``token expired``), ``nbf`` (``token not yet valid``) and ``iat``
   (``token issued in the future``) not in the future, all with ``leeway_seconds``;
   ``sub`` must be a non-empty string (``malformed token``).

Identity mapping (:class:`OIDCClaims`)
--------------------------------------
``username`` is the ``username_claim`` (default ``preferred_username``) or else ``sub``;
``groups`` come from ``groups_claim``, a list of strings or one string, where the name may
be a dotted path into nested objects (``realm_access.roles``); a claim whose literal name
contains dots (``https://example.com/groups``) wins over the path reading.

``is_agent`` marks a machine token. The rule, first match wins:

* ``gty == "client-credentials"`` (Auth0) or ``idtyp == "app"`` (Microsoft Entra ID) →
  agent;
* the username claim is present → user;
* ``sub`` equals the client id (``client_id`` or ``azp``) → agent: the client-credentials
  shape of RFC 9068 §2.2 (Okta, oidc-provider, …);
* none of the user claims (``email``, ``name``, ``given_name``, ``family_name``,
  ``preferred_username``, ``upn``) is present → agent;
* otherwise → user.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import JWKRegistry, Key, KeySet
from joserfc.jws import JWSRegistry

from jitgate.config import OIDCSettings
from jitgate.errors import Unauthenticated, Unavailable

__all__ = ["OIDCClaims", "OIDCValidator", "looks_like_jwt"]

MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_DOCUMENT_BYTES: Final = 512 * 1024
MIN_RSA_BITS: Final = 2048
MAX_TIMESTAMP: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
ACCEPTED_TYPES: Final = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
USER_CLAIMS: Final = ("email", "name", "given_name", "family_name", "preferred_username", "upn")

# JWS algorithm -> (key type, acceptable curves or None for "no curve").
_KEY_TYPES: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in (256, 384, 512)},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
    "Ed448": ("OKP", frozenset({"Ed448"})),
}

_JWT_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a compact JWS (three base64url segments).

    Cheap routing help only (OIDC validation or the gateway's own opaque tokens); it
    proves nothing about the token.
    """
    return len(token) <= MAX_TOKEN_BYTES and _JWT_SHAPE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class OIDCClaims:
    """The verified content of an OIDC JWT, mapped to what jitgate needs."""

    issuer: str
    subject: str
    username: str
    email: str | None
    groups: tuple[str, ...]
    client_id: str | None
    is_agent: bool
    expires_at: datetime
    token_id: str | None
    claims: Mapping[str, Any] = field(compare=False, repr=False)


# ---------------------------------------------------------------------------- parsing


def _b64_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise Unauthenticated("malformed token") from None
    if not isinstance(value, dict):
        raise Unauthenticated("malformed token")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not looks_like_jwt(token):
        raise Unauthenticated("malformed token")
    header_segment, payload_segment, _ = token.split(".")
    return _b64_json(header_segment), _b64_json(payload_segment)


def _check_header(header: Mapping[str, Any], allowed: Iterable[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
        raise Unauthenticated("algorithm not allowed")
    if alg not in allowed or alg not in _KEY_TYPES:
        raise Unauthenticated("algorithm not allowed")
    if "crit" in header:
        raise Unauthenticated("unsupported critical header")
    if "b64" in header:
        raise Unauthenticated("malformed token")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise Unauthenticated("unsupported token type")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthenticated("malformed token")
    return alg


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name, or by dotted path into nested objects when no claim has that name."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        return tuple(dict.fromkeys(v for v in value if isinstance(v, str) and v))
    return ()


def _is_agent(claims: Mapping[str, Any], username_claim: str, client_id: str | None) -> bool:
    if claims.get("gty") == "client-credentials" or claims.get("idtyp") == "app":
        return True
    if isinstance(_lookup(claims, username_claim), str):
        return False
    if client_id is not None and claims.get("sub") == client_id:
        return True
    return not any(name in claims for name in USER_CLAIMS)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _map_claims(claims: Mapping[str, Any], settings: OIDCSettings) -> OIDCClaims:
    subject = claims["sub"]
    username = _lookup(claims, settings.username_claim)
    client_id = _optional_str(claims.get("client_id")) or _optional_str(claims.get("azp"))
    return OIDCClaims(
        issuer=claims["iss"],
        subject=subject,
        username=username if isinstance(username, str) and username else subject,
        email=_optional_str(claims.get("email")),
        groups=_groups(_lookup(claims, settings.groups_claim)),
        client_id=client_id,
        is_agent=_is_agent(claims, settings.username_claim, client_id),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        token_id=_optional_str(claims.get("jti")),
        claims=MappingProxyType(dict(claims)),
    )


# ---------------------------------------------------------------------------- claims checks


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated("malformed token")
    if not 0 <= value <= MAX_TIMESTAMP:
        raise Unauthenticated("malformed token")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: int) -> None:
    exp = _number(claims, "exp")
    if exp is None:
        raise Unauthenticated("token has no expiry")
    if exp + leeway <= now:
        raise Unauthenticated("token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf - leeway > now:
        raise Unauthenticated("token not yet valid")
    iat = _number(claims, "iat")
    if iat is not None and iat - leeway > now:
        raise Unauthenticated("token issued in the future")


def _check_audience(claims: Mapping[str, Any], audiences: Iterable[str]) -> None:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(v, str) and v in audiences for v in values):
        raise Unauthenticated("wrong audience")


def _check_claims(claims: Mapping[str, Any], settings: OIDCSettings, now: float) -> None:
    if claims.get("iss") != settings.issuer:
        raise Unauthenticated("wrong issuer")
    _check_times(claims, now, settings.leeway_seconds)
    _check_audience(claims, settings.audiences)
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise Unauthenticated("malformed token")


# ---------------------------------------------------------------------------- keys


def _usable(data: Mapping[str, Any]) -> Key | None:
    """Import one JWKS member, or None when it must never verify a token signature."""
    if data.get("use") not in (None, "sig") or data.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if data["kty"] == "RSA" and _rsa_bits(data.get("n")) < MIN_RSA_BITS:
        return None  # checked before import, which would only warn
    try:
        return JWKRegistry.import_key(dict(data))
    except (JoseError, ValueError, TypeError):
        return None


def _rsa_bits(modulus: Any) -> int:
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _parse_jwks(document: Mapping[str, Any]) -> KeySet:
    members = document.get("keys")
    if not isinstance(members, list):
        raise Unavailable("identity provider returned an invalid JWKS")
    keys = [key for m in members if isinstance(m, Mapping) and (key := _usable(m)) is not None]
    return KeySet(keys)


def _fits(key: Key, alg: str) -> bool:
    kty, curves = _KEY_TYPES[alg]
    if key.key_type != kty or key.get("alg") not in (None, alg):
        return False
    return curves is None or getattr(key, "curve_name", None) in curves


def _select(keys: KeySet, kid: str | None, alg: str) -> Key | None:
    """The key for ``kid`` (None when unknown); raises when it exists but cannot fit ``alg``."""
    if kid is None:
        fitting = [k for k in keys if _fits(k, alg)]
        return fitting[0] if len(fitting) == 1 else None
    named = [k for k in keys if k.kid == kid]
    if not named:
        return None
    for key in named:
        if _fits(key, alg):
            return key
    raise Unauthenticated("signing key does not match algorithm")


class _PinnedRegistry(JWSRegistry):
    """A JWSRegistry that accepts exactly one algorithm, already vetted by the validator.

    It does not warn about ``EdDSA`` (superseded by ``Ed25519``/``Ed448`` in RFC 9864) as
    the base class does on every use: the operator allowed it in the settings.
    """

    max_header_length = MAX_TOKEN_BYTES  # room for x5c chains

    def __init__(self, alg: str) -> None:
        super().__init__(algorithms=[alg], strict_check_header=False)
        self._alg = alg

    def get_alg(self, name: str) -> JWSAlgModel:
        if name != self._alg or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} is not allowed")
        return self.algorithms[name]


@dataclass(frozen=True, slots=True)
class _KeyCache:
    keys: KeySet
    expires_at: float


# ---------------------------------------------------------------------------- validator


class OIDCValidator:
    """Validates JWTs of one OIDC issuer. Synchronous and safe to share between threads."""

    def __init__(
        self,
        settings: OIDCSettings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._http = http if http is not None else _default_client(settings)
        self._owns_http = http is None
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._discovery_expires = 0.0
        self._cache: _KeyCache | None = None
        self._last_fetch: float | None = None
        self._last_failure: float | None = None

    @property
    def settings(self) -> OIDCSettings:
        return self._settings

    def close(self) -> None:
        """Close the HTTP client when this validator created it."""
        if self._owns_http:
            self._http.close()

    # ------------------------------------------------------------------ public API

    def validate(self, token: str) -> OIDCClaims:
        """Verify ``token`` and map its claims; raises Unauthenticated or Unavailable."""
        header, unverified = _split(token)
        alg = _check_header(header, self._settings.algorithms)
        if unverified.get("iss") != self._settings.issuer:
            raise Unauthenticated("wrong issuer")
        key = self._signing_key(header.get("kid"), alg)
        claims = self._verify_signature(token, key, alg)
        _check_claims(claims, self._settings, self._clock())
        return _map_claims(claims, self._settings)

    def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (cached), e.g. for the CLI's login flows."""
        with self._lock:
            return dict(self._discovery_locked(self._clock()))

    # ------------------------------------------------------------------ signature

    @staticmethod
    def _verify_signature(token: str, key: Key, alg: str) -> dict[str, Any]:
        registry = _PinnedRegistry(alg)
        try:
            return dict(jwt.decode(token, key, registry=registry).claims)
        except BadSignatureError:
            raise Unauthenticated("bad signature") from None
        except (JoseError, ValueError, TypeError):
            raise Unauthenticated("malformed token") from None

    # ------------------------------------------------------------------ keys

    def _signing_key(self, kid: str | None, alg: str) -> Key:
        now = self._clock()
        cache = self._cache
        if cache is not None and now < cache.expires_at:
            key = _select(cache.keys, kid, alg)
            if key is not None:
                return key
        with self._lock:
            key = self._signing_key_locked(kid, alg, self._clock())
        if key is None:
            raise Unauthenticated("unknown signing key")
        return key

    def _signing_key_locked(self, kid: str | None, alg: str, now: float) -> Key | None:
        cache = self._cache
        if cache is not None and now < cache.expires_at:
            key = _select(cache.keys, kid, alg)
            if key is not None or not self._may_fetch(now):
                return key  # another thread refreshed, or the refetch budget is spent
        elif self._recent_failure(now):
            raise Unavailable("identity provider unavailable")
        return _select(self._fetch_jwks(now), kid, alg)

    def _may_fetch(self, now: float) -> bool:
        last = self._last_fetch
        return last is None or now - last >= self._settings.jwks_refresh_min_interval

    def _recent_failure(self, now: float) -> bool:
        failed = self._last_failure
        return failed is not None and now - failed < self._settings.jwks_refresh_min_interval

    def _fetch_jwks(self, now: float) -> KeySet:
        self._last_fetch = now
        try:
            jwks_uri = self._discovery_locked(now).get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise Unavailable("identity provider has no usable jwks_uri")
            keys = _parse_jwks(self._get_json(jwks_uri))
        except Unavailable:
            self._last_failure = now
            raise
        self._last_failure = None
        self._cache = _KeyCache(keys, now + self._settings.jwks_cache_seconds)
        return keys

    # ------------------------------------------------------------------ discovery

    def _discovery_locked(self, now: float) -> dict[str, Any]:
        if self._discovery is not None and now < self._discovery_expires:
            return self._discovery
        url = self._settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url)
        if document.get("issuer") != self._settings.issuer:
            raise Unavailable("identity provider discovery names a different issuer")
        self._discovery = document
        self._discovery_expires = now + self._settings.jwks_cache_seconds
        return document

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            body = _bounded_get(self._http, url, self._settings.http_timeout)
        except httpx.HTTPError:
            raise Unavailable("identity provider unreachable") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise Unavailable("identity provider returned invalid JSON") from None
        if not isinstance(document, dict):
            raise Unavailable("identity provider returned invalid JSON")
        return document


def _bounded_get(http: httpx.Client, url: str, timeout: float) -> bytes:
    with http.stream("GET", url, timeout=timeout, headers={"accept": "application/json"}) as resp:
        if resp.status_code != httpx.codes.OK:
            raise httpx.HTTPStatusError("unexpected status", request=resp.request, response=resp)
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > MAX_DOCUMENT_BYTES:
                raise httpx.DecodingError("identity provider document too large")
            chunks.append(chunk)
    return b"".join(chunks)


def _default_client(settings: OIDCSettings) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.ca_file))
    return httpx.Client(timeout=settings.http_timeout, verify=verify, follow_redirects=False)
