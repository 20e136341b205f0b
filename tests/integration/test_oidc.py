"""OIDC validation and login flows against a real provider (tests/oidc/provider.mjs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import JWKRegistry, RSAKey

from jitgate.config import OIDCSettings
from jitgate.errors import Unauthenticated, Unavailable
from jitgate.identity.oidc import OIDCValidator, looks_like_jwt
from jitgate.identity.oidc_flows import TokenSet, device_flow, pkce_flow, refresh
from tests.fixtures.oidc import CLI_CLIENT_ID, OIDCProvider, start_oidc_provider

pytestmark = pytest.mark.oidc


# ---------------------------------------------------------------------------- helpers


class Clock:
    """A settable clock starting at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingTransport(httpx.HTTPTransport):
    """The real transport, recording the path of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.paths.append(request.url.path)
        return super().handle_request(request)

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.paths if path.endswith(suffix))


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def http(transport: CountingTransport) -> Iterator[httpx.Client]:
    with httpx.Client(transport=transport, timeout=5.0) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def validator_for(
    provider: OIDCProvider, http: httpx.Client, clock: Clock | None = None, **overrides: Any
) -> OIDCValidator:
    return OIDCValidator(provider.settings(**overrides), http=http, clock=clock or time.time)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def reason(validator: OIDCValidator, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        validator.validate(token)
    assert token not in info.value.message
    return info.value.message


def jwks(provider: OIDCProvider) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = provider.http.get(provider.discovery()["jwks_uri"]).json()["keys"]
    return keys


@pytest.fixture(scope="module")
def alice(oidc_provider: OIDCProvider) -> TokenSet:
    return oidc_provider.login_device("alice", "alice-password")


# ---------------------------------------------------------------------------- real tokens


def test_device_flow_access_token(
    oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client
) -> None:
    assert looks_like_jwt(alice.access_token)
    assert segment(alice.access_token, 0)["typ"] == "at+jwt"
    claims = validator_for(oidc_provider, http).validate(alice.access_token)
    assert claims.issuer == oidc_provider.issuer
    assert claims.subject == "u-1001"
    assert claims.username == "alice"
    assert claims.email == "alice@example.test"
    assert claims.groups == ("admins", "dbas")
    assert claims.client_id == CLI_CLIENT_ID
    assert claims.is_agent is False
    assert claims.token_id is not None
    assert claims.claims["aud"] == "jitgate"
    assert claims.expires_at.timestamp() > time.time()


def test_device_flow_id_token(
    oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client
) -> None:
    assert alice.id_token is not None
    assert segment(alice.id_token, 0)["alg"] == "ES256"  # the EC key of the JWKS
    claims = validator_for(oidc_provider, http).validate(alice.id_token)
    assert (claims.subject, claims.username, claims.email) == (
        "u-1001",
        "alice",
        "alice@example.test",
    )
    assert claims.groups == ("admins", "dbas")
    assert claims.claims["aud"] == CLI_CLIENT_ID
    assert claims.is_agent is False


def test_groups_and_username_claims_are_configurable(
    oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client
) -> None:
    validator = validator_for(
        oidc_provider, http, groups_claim="realm_access.roles", username_claim="email"
    )
    claims = validator.validate(alice.access_token)
    assert claims.groups == ("db-admin",)
    assert claims.username == "alice@example.test"


def test_client_credentials_token_is_agent(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    token = oidc_provider.client_credentials_token()
    assert segment(token, 0)["alg"] == "ES256"
    claims = validator_for(oidc_provider, http).validate(token)
    assert claims.is_agent is True
    assert (claims.subject, claims.username, claims.client_id) == ("ci-agent",) * 3
    assert claims.groups == ()
    assert claims.email is None


def test_pkce_flow_end_to_end(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    tokens = oidc_provider.login_pkce("bob", "bob-password")
    validator = validator_for(oidc_provider, http)
    access = validator.validate(tokens.access_token)
    assert (access.username, access.groups, access.is_agent) == ("bob", ("approvers",), False)
    assert tokens.id_token is not None
    assert validator.validate(tokens.id_token).email == "bob@example.test"
    assert tokens.refresh_token is not None  # offline_access was granted (prompt=consent)


def test_refresh(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    first = oidc_provider.login_device("bob", "bob-password")
    assert first.refresh_token is not None
    second = refresh(oidc_provider.discovery(), CLI_CLIENT_ID, first.refresh_token, http=http)
    assert second.access_token != first.access_token
    assert second.refresh_token not in (None, first.refresh_token)  # rotated for public clients
    assert validator_for(oidc_provider, http).validate(second.access_token).username == "bob"
    with pytest.raises(Unauthenticated, match="invalid_grant"):
        refresh(oidc_provider.discovery(), CLI_CLIENT_ID, first.refresh_token, http=http)


def test_device_flow_denied_by_user(oidc_provider: OIDCProvider) -> None:
    with pytest.raises(Unauthenticated, match="access_denied"):
        oidc_provider.login_device("alice", "alice-password", deny=True)


def test_wrong_password_is_refused(oidc_provider: OIDCProvider) -> None:
    with pytest.raises(AssertionError, match="rejected the login"):
        oidc_provider.login_pkce("alice", "not-her-password")


# ---------------------------------------------------------------------------- PKCE callback


def callback_url(authorization_url: str, **params: str) -> str:
    query = parse_qs(urlsplit(authorization_url).query)
    return f"{query['redirect_uri'][0]}?{urlencode(params)}"


def state_of(authorization_url: str) -> str:
    return parse_qs(urlsplit(authorization_url).query)["state"][0]


def test_pkce_authorization_request(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    seen: list[str] = []

    def open_browser(url: str) -> None:
        seen.append(url)
        httpx.get(callback_url(url, state=state_of(url), error="access_denied"))

    with pytest.raises(Unauthenticated, match="access_denied"):
        pkce_flow(
            oidc_provider.discovery(),
            CLI_CLIENT_ID,
            ["openid", "offline_access"],
            http=http,
            open_browser=open_browser,
        )
    query = {k: v[0] for k, v in parse_qs(urlsplit(seen[0]).query).items()}
    assert seen[0].startswith(oidc_provider.discovery()["authorization_endpoint"] + "?")
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["prompt"] == "consent"
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    assert query["redirect_uri"].endswith("/callback")


def test_pkce_ignores_wrong_state(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    answers: list[int] = []

    def open_browser(url: str) -> None:
        wrong = httpx.get(callback_url(url, state="forged", code="attacker-code"))
        other = httpx.get(callback_url(url).replace("/callback", "/favicon.ico"))
        answers.extend([wrong.status_code, other.status_code])
        httpx.get(callback_url(url, state=state_of(url), error="login_required"))

    with pytest.raises(Unauthenticated, match="login_required"):
        pkce_flow(
            oidc_provider.discovery(),
            CLI_CLIENT_ID,
            ["openid"],
            http=http,
            open_browser=open_browser,
        )
    assert answers == [400, 404]


def test_pkce_rejects_issuer_mixup(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    def open_browser(url: str) -> None:
        page = httpx.get(
            callback_url(url, state=state_of(url), code="c", iss="https://evil.example")
        )
        assert "You may close this window" in page.text

    with pytest.raises(Unauthenticated, match="different identity provider"):
        pkce_flow(
            oidc_provider.discovery(),
            CLI_CLIENT_ID,
            ["openid"],
            http=http,
            open_browser=open_browser,
        )


def test_pkce_times_out(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    started = time.monotonic()
    with pytest.raises(Unauthenticated, match="timed out"):
        pkce_flow(
            oidc_provider.discovery(),
            CLI_CLIENT_ID,
            ["openid"],
            http=http,
            open_browser=lambda url: None,
            timeout=0.3,
        )
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------- keys


def test_key_rotation_refetches_jwks(
    oidc_provider: OIDCProvider, transport: CountingTransport, http: httpx.Client, clock: Clock
) -> None:
    validator = validator_for(oidc_provider, http, clock)
    old = oidc_provider.client_credentials_token()
    validator.validate(old)
    assert transport.count("/jwks") == 1
    kids = oidc_provider.rotate_keys()
    new = oidc_provider.client_credentials_token()
    assert segment(new, 0)["kid"] == kids[1] != segment(old, 0)["kid"]  # the new EC key
    clock.now += 1  # within jwks_refresh_min_interval (10 s) of the last fetch
    assert reason(validator, new) == "unknown signing key"
    assert transport.count("/jwks") == 1
    clock.now += 10
    assert validator.validate(new).subject == "ci-agent"
    assert validator.validate(old).subject == "ci-agent"  # old keys are still published
    assert transport.count("/jwks") == 2
    assert transport.count("/openid-configuration") == 1


def forged_token(issuer: str, kid: str, key: RSAKey | None = None) -> str:
    attacker = key or RSAKey.generate_key(2048)
    claims = {"iss": issuer, "sub": "root", "aud": "jitgate", "exp": int(time.time()) + 60}
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, attacker)


def test_unknown_kid_flood_is_rate_limited(
    oidc_provider: OIDCProvider, transport: CountingTransport, http: httpx.Client, clock: Clock
) -> None:
    validator = validator_for(oidc_provider, http, clock, jwks_refresh_min_interval=10)
    validator.validate(oidc_provider.client_credentials_token())
    attacker = RSAKey.generate_key(2048)
    forged = [forged_token(oidc_provider.issuer, f"kid-{i}", attacker) for i in range(200)]
    failures: list[str] = []

    def flood(tokens: list[str]) -> None:
        for token in tokens:
            try:
                validator.validate(token)
            except Unauthenticated as exc:
                failures.append(exc.message)

    for round_ in range(3):  # three intervals: at most one refetch in each
        threads = [threading.Thread(target=flood, args=(forged[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert transport.count("/jwks") == 1 + round_
        clock.now += 10
    assert set(failures) == {"unknown signing key"}
    assert len(failures) == 600


def test_kid_of_ec_key_with_rs256(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    ec_kid = next(k["kid"] for k in jwks(oidc_provider) if k["kty"] == "EC")
    token = forged_token(oidc_provider.issuer, ec_kid)
    assert reason(validator_for(oidc_provider, http), token) == (
        "signing key does not match algorithm"
    )


def test_hs256_with_the_public_key_is_refused(
    oidc_provider: OIDCProvider, http: httpx.Client
) -> None:
    member = next(k for k in jwks(oidc_provider) if k["kty"] == "RSA")
    public = JWKRegistry.import_key(member)
    assert isinstance(public, RSAKey)
    header = b64(json.dumps({"alg": "HS256", "kid": member["kid"]}).encode())
    payload = b64(
        json.dumps({"iss": oidc_provider.issuer, "sub": "root", "aud": "jitgate"}).encode()
    )
    for secret in (public.as_pem(private=False), json.dumps(member).encode()):
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{b64(mac)}"
        assert reason(validator_for(oidc_provider, http), token) == "algorithm not allowed"


# ---------------------------------------------------------------------------- forged and stale


def test_expired_token(
    oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client, clock: Clock
) -> None:
    validator = validator_for(oidc_provider, http, clock)
    exp = segment(alice.access_token, 1)["exp"]
    clock.now = exp + 29  # within the 30 s leeway
    assert validator.validate(alice.access_token).username == "alice"
    clock.now = exp + 31
    assert reason(validator, alice.access_token) == "token expired"


def test_wrong_audience(oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client) -> None:
    assert alice.id_token is not None
    only_api = validator_for(oidc_provider, http, audiences=["jitgate"])
    assert only_api.validate(alice.access_token).username == "alice"
    assert reason(only_api, alice.id_token) == "wrong audience"  # aud is the client id
    other = validator_for(oidc_provider, http, audiences=["another-api"])
    assert reason(other, alice.access_token) == "wrong audience"


def test_wrong_issuer(
    oidc_provider: OIDCProvider, alice: TokenSet, transport: CountingTransport, http: httpx.Client
) -> None:
    other = validator_for(oidc_provider, http, issuer=oidc_provider.issuer + "/other")
    assert reason(other, alice.access_token) == "wrong issuer"
    assert transport.paths == []  # rejected before any discovery or JWKS fetch


def test_discovery_must_name_the_configured_issuer(
    oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client
) -> None:
    slash = validator_for(oidc_provider, http, issuer=oidc_provider.issuer + "/")
    with pytest.raises(Unavailable, match="different issuer"):
        slash.discovery()
    discovery = validator_for(oidc_provider, http).discovery()
    for name in ("device_authorization_endpoint", "authorization_endpoint", "token_endpoint"):
        assert discovery[name].startswith(oidc_provider.issuer + "/")


def test_tampered_token(oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client) -> None:
    validator = validator_for(oidc_provider, http)
    head, payload, signature = alice.access_token.split(".")
    claims = segment(alice.access_token, 1)
    claims["groups"] = ["admins", "superusers"]
    forged_payload = b64(json.dumps(claims).encode())
    assert reason(validator, f"{head}.{forged_payload}.{signature}") == "bad signature"
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert reason(validator, f"{head}.{payload}.{flipped}") == "bad signature"


def test_alg_none(oidc_provider: OIDCProvider, alice: TokenSet, http: httpx.Client) -> None:
    header = segment(alice.access_token, 0)
    payload = alice.access_token.split(".")[1]
    for alg in ("none", "NONE"):
        head = b64(json.dumps({**header, "alg": alg}).encode())
        token = f"{head}.{payload}."
        assert reason(validator_for(oidc_provider, http), token) == "algorithm not allowed"


def test_unknown_critical_header(oidc_provider: OIDCProvider, http: httpx.Client) -> None:
    rsa_kid = next(k["kid"] for k in jwks(oidc_provider) if k["kty"] == "RSA")
    header = {"alg": "RS256", "kid": rsa_kid, "crit": ["urn:example:must-understand"]}
    payload = {"iss": oidc_provider.issuer}
    parts = (json.dumps(header).encode(), json.dumps(payload).encode(), secrets.token_bytes(256))
    token = ".".join(b64(part) for part in parts)
    assert reason(validator_for(oidc_provider, http), token) == "unsupported critical header"


# ---------------------------------------------------------------------------- provider down


def test_provider_down_is_unavailable(clock: Clock) -> None:
    with start_oidc_provider() as provider:
        tokens = provider.login_device("alice", "alice-password")
        assert tokens.refresh_token is not None
        discovery = provider.discovery()
        client = httpx.Client(timeout=2.0)
        validator = OIDCValidator(
            provider.settings(jwks_cache_seconds=60), http=client, clock=clock
        )
        assert validator.validate(tokens.access_token).username == "alice"
    # The process is gone now.
    try:
        clock.now += 30
        assert validator.validate(tokens.access_token).username == "alice"  # cached JWKS
        clock.now += 31
        with pytest.raises(Unavailable):
            validator.validate(tokens.access_token)
        fresh = OIDCValidator(provider.settings(), http=client, clock=clock)
        with pytest.raises(Unavailable):
            fresh.validate(tokens.access_token)
        with pytest.raises(Unavailable):
            fresh.discovery()
        with pytest.raises(Unavailable):
            refresh(discovery, CLI_CLIENT_ID, tokens.refresh_token, http=client)
        with pytest.raises(Unavailable):
            device_flow(discovery, CLI_CLIENT_ID, ["openid"], http=client, prompt=print)
    finally:
        client.close()


def test_settings_helper(oidc_provider: OIDCProvider) -> None:
    settings = oidc_provider.settings(leeway_seconds=5)
    assert isinstance(settings, OIDCSettings)
    assert settings.audiences == ["jitgate", "jitgate-cli"]
    assert (settings.client_id, settings.leeway_seconds) == (CLI_CLIENT_ID, 5)
