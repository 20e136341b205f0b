"""Unit tests for jitgate.identity.oidc and oidc_flows: an in-memory IdP, no sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_primitives
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from jitgate.config import OIDCSettings
from jitgate.errors import Unauthenticated, Unavailable
from jitgate.identity.oidc import OIDCValidator, looks_like_jwt
from jitgate.identity.oidc_flows import code_challenge, device_flow, new_code_verifier, refresh

ISSUER = "https://idp.example.test/realms/main"
NOW = 1_800_000_000.0


# ---------------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        "ec": ECKey.generate_key("P-256", parameters={"kid": "ec-1"}),
        "okp": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}),
    }


class FakeIdP:
    """Discovery + JWKS over httpx.MockTransport, counting requests."""

    def __init__(self, keys: Mapping[str, Key], issuer: str = ISSUER) -> None:
        self.keys = dict(keys)
        self.issuer = issuer
        self.discovery: dict[str, Any] = {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/certs",
            "token_endpoint": f"{issuer}/token",
            "device_authorization_endpoint": f"{issuer}/device",
        }
        self.jwks: list[Any] = [dict(k.as_dict(private=False)) for k in keys.values()]
        self.requests: list[str] = []
        self.status = 200
        self.lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request.url.path)
        if self.status != 200:
            return httpx.Response(self.status)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=self.discovery)
        if request.url.path.endswith("/certs"):
            return httpx.Response(200, json={"keys": self.jwks})
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.requests if path.endswith(suffix))

    def token(
        self,
        key: Key | None = None,
        alg: str = "RS256",
        header: Mapping[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        key = key if key is not None else self.keys["rsa"]
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "u-1",
            "aud": "jitgate",
            "exp": int(NOW) + 300,
            "iat": int(NOW) - 5,
            "preferred_username": "alice",
            "jti": "token-1",
        }
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        head = {"alg": alg, "kid": key.kid, **(header or {})}
        return jwt.encode(head, payload, key, algorithms=[alg])


@pytest.fixture
def idp(keys: dict[str, Key]) -> FakeIdP:
    return FakeIdP(keys)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_validator(idp: FakeIdP, clock: Clock) -> Iterator[Callable[..., OIDCValidator]]:
    clients: list[httpx.Client] = []

    def make(**overrides: Any) -> OIDCValidator:
        values: dict[str, Any] = {"issuer": idp.issuer, "audiences": ["jitgate", "jitgate-cli"]}
        values.update(overrides)
        client = idp.client()
        clients.append(client)
        return OIDCValidator(OIDCSettings(**values), http=client, clock=clock)

    yield make
    for client in clients:
        client.close()


def reason(validator: OIDCValidator, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        validator.validate(token)
    assert token not in info.value.message
    return info.value.message


# ---------------------------------------------------------------------------- looks_like_jwt


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", True),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", True),  # unsigned: still routed to OIDC
        ("jgt_abcdef0123456789", False),
        ("a.b", False),
        ("a.b.c.d.e", False),  # JWE
        ("a+b.c.d", False),
        ("", False),
        ("a." + "b" * 20000 + ".c", False),
    ],
)
def test_looks_like_jwt(token: str, expected: bool) -> None:
    assert looks_like_jwt(token) is expected


# ---------------------------------------------------------------------------- mapping


def test_valid_token_maps_claims(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    token = idp.token(email="alice@example.test", groups=["admins", "dbas", "admins"], azp="cli")
    claims = make_validator().validate(token)
    assert claims.issuer == ISSUER
    assert claims.subject == "u-1"
    assert claims.username == "alice"
    assert claims.email == "alice@example.test"
    assert claims.groups == ("admins", "dbas")
    assert claims.client_id == "cli"
    assert claims.is_agent is False
    assert claims.token_id == "token-1"
    assert claims.expires_at.timestamp() == int(NOW) + 300
    assert claims.claims["aud"] == "jitgate"
    with pytest.raises(TypeError):
        claims.claims["aud"] = "x"  # type: ignore[index]


@pytest.mark.parametrize("alg_key", [("ES256", "ec"), ("Ed25519", "okp"), ("PS256", "rsa")])
def test_other_algorithms(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, alg_key: tuple[str, str]
) -> None:
    alg, key = alg_key
    validator = make_validator(algorithms=["RS256", "PS256", "ES256", "Ed25519"])
    assert validator.validate(idp.token(key=idp.keys[key], alg=alg)).subject == "u-1"


def test_eddsa_does_not_warn(make_validator: Callable[..., OIDCValidator], idp: FakeIdP) -> None:
    signed = idp.token(key=idp.keys["okp"], alg="Ed25519")
    header = {"alg": "EdDSA", "kid": "ed-1", "typ": "JWT"}
    _, payload, _ = signed.split(".")
    signing_input = f"{b64json(header)}.{payload}".encode()
    okp = idp.keys["okp"]
    assert isinstance(okp, OKPKey)
    signature = okp.private_key.sign(signing_input)  # type: ignore[union-attr]
    token = f"{signing_input.decode()}.{b64(signature)}"
    assert make_validator().validate(token).username == "alice"  # warnings are errors here


@pytest.mark.parametrize(
    ("groups_claim", "claims", "expected"),
    [
        ("groups", {"groups": "solo"}, ("solo",)),
        ("groups", {"groups": ["a", 7, "", "b"]}, ("a", "b")),
        ("groups", {}, ()),
        ("groups", {"groups": {"not": "a list"}}, ()),
        ("realm_access.roles", {"realm_access": {"roles": ["r1", "r2"]}}, ("r1", "r2")),
        ("realm_access.roles", {"realm_access": ["x"]}, ()),
        ("https://ex.test/groups", {"https://ex.test/groups": ["ns"]}, ("ns",)),
    ],
)
def test_groups_claim(
    make_validator: Callable[..., OIDCValidator],
    idp: FakeIdP,
    groups_claim: str,
    claims: dict[str, Any],
    expected: tuple[str, ...],
) -> None:
    validator = make_validator(groups_claim=groups_claim)
    assert validator.validate(idp.token(**claims)).groups == expected


def test_username_falls_back_to_sub(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    claims = make_validator().validate(idp.token(drop=("preferred_username",), email="a@x.test"))
    assert claims.username == "u-1"
    by_email = make_validator(username_claim="email")
    assert by_email.validate(idp.token(email="a@x.test")).username == "a@x.test"


@pytest.mark.parametrize(
    ("claims", "drop", "agent"),
    [
        ({}, (), False),  # username present
        ({"sub": "ci", "client_id": "ci"}, ("preferred_username",), True),  # RFC 9068 shape
        ({"sub": "ci", "azp": "ci"}, ("preferred_username",), True),
        ({"sub": "ci", "client_id": "ci"}, (), False),  # a username claim means a user
        ({"gty": "client-credentials"}, (), True),  # Auth0
        ({"idtyp": "app"}, (), True),  # Entra ID
        ({}, ("preferred_username",), True),  # no user claims at all
        ({"email": "a@x.test"}, ("preferred_username",), False),
        ({"name": "A"}, ("preferred_username",), False),
    ],
)
def test_is_agent_rule(
    make_validator: Callable[..., OIDCValidator],
    idp: FakeIdP,
    claims: dict[str, Any],
    drop: tuple[str, ...],
    agent: bool,
) -> None:
    assert make_validator().validate(idp.token(drop=drop, **claims)).is_agent is agent


# ---------------------------------------------------------------------------- claims checks


@pytest.mark.parametrize(
    ("claims", "drop", "expected"),
    [
        ({"exp": int(NOW) - 31}, (), "token expired"),
        ({}, ("exp",), "token has no expiry"),
        ({"exp": "soon"}, (), "malformed token"),
        ({"exp": True}, (), "malformed token"),
        ({"exp": 10**20}, (), "malformed token"),
        ({"nbf": int(NOW) + 31}, (), "token not yet valid"),
        ({"iat": int(NOW) + 31}, (), "token issued in the future"),
        ({"aud": "other"}, (), "wrong audience"),
        ({"aud": ["other", 3]}, (), "wrong audience"),
        ({}, ("aud",), "wrong audience"),
        ({"aud": {"jitgate": 1}}, (), "wrong audience"),
        ({"iss": "https://evil.example"}, (), "wrong issuer"),
        ({}, ("iss",), "wrong issuer"),
        ({"sub": ""}, (), "malformed token"),
        ({}, ("sub",), "malformed token"),
    ],
)
def test_claim_failures(
    make_validator: Callable[..., OIDCValidator],
    idp: FakeIdP,
    claims: dict[str, Any],
    drop: tuple[str, ...],
    expected: str,
) -> None:
    assert reason(make_validator(), idp.token(drop=drop, **claims)) == expected


def test_leeway_accepts_small_skew(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    token = idp.token(exp=int(NOW) - 29, nbf=int(NOW) + 29, iat=int(NOW) + 29)
    assert make_validator().validate(token).subject == "u-1"
    assert reason(make_validator(leeway_seconds=0), token) == "token expired"


def test_audience_list(make_validator: Callable[..., OIDCValidator], idp: FakeIdP) -> None:
    token = idp.token(aud=["other", "jitgate-cli"])
    assert make_validator().validate(token).subject == "u-1"


def test_wrong_issuer_fetches_nothing(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    assert reason(make_validator(), idp.token(iss="https://other.example")) == "wrong issuer"
    assert idp.requests == []


# ---------------------------------------------------------------------------- header checks


def hs256_with_public_key(rsa: RSAKey, payload: Mapping[str, Any]) -> str:
    """The classic confusion: HMAC-SHA256 keyed with the issuer's public key (PEM)."""
    signing_input = f"{b64json({'alg': 'HS256', 'kid': rsa.kid})}.{b64json(payload)}"
    mac = hmac.new(rsa.as_pem(private=False), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


def rs256_raw(
    key: RSAKey | rsa_primitives.RSAPrivateKey,
    header: Mapping[str, Any],
    payload: Mapping[str, Any],
) -> str:
    """Sign whatever header joserfc itself would refuse to produce."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    private = key.private_key if isinstance(key, RSAKey) else key
    assert isinstance(private, rsa_primitives.RSAPrivateKey)
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def unsigned(header: Mapping[str, Any], payload: Mapping[str, Any], sig: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(sig)}"


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "hs512", "RS1", "ES256K", 42, None])
def test_disallowed_algorithms(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, alg: Any
) -> None:
    token = unsigned({"alg": alg, "kid": "rsa-1"}, {"iss": ISSUER, "sub": "x"}, b"sig")
    assert reason(make_validator(), token) == "algorithm not allowed"
    assert idp.requests == []


def test_hmac_refused_even_if_settings_allow_it(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, keys: dict[str, Key]
) -> None:
    rsa = keys["rsa"]
    assert isinstance(rsa, RSAKey)
    token = hs256_with_public_key(rsa, {"iss": ISSUER, "sub": "x", "aud": "jitgate"})
    settings = OIDCSettings.model_construct(
        **{**make_validator().settings.model_dump(), "algorithms": ["HS256", "RS256"]}
    )
    validator = OIDCValidator(settings, http=idp.client(), clock=Clock())
    assert reason(validator, token) == "algorithm not allowed"
    validator.close()


def test_algorithm_outside_allow_list(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    token = idp.token(key=idp.keys["ec"], alg="ES256")
    assert reason(make_validator(algorithms=["RS256"]), token) == "algorithm not allowed"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"crit": ["exp"], "exp": 1}, "unsupported critical header"),
        ({"b64": False, "crit": ["b64"]}, "unsupported critical header"),
        ({"b64": True}, "malformed token"),
        ({"typ": "logout+jwt"}, "unsupported token type"),
        ({"typ": "dpop+jwt"}, "unsupported token type"),
        ({"typ": 1}, "unsupported token type"),
        ({"kid": 7}, "malformed token"),
    ],
)
def test_header_failures(
    make_validator: Callable[..., OIDCValidator],
    idp: FakeIdP,
    header: dict[str, Any],
    expected: str,
) -> None:
    rsa = idp.keys["rsa"]
    assert isinstance(rsa, RSAKey)
    token = rs256_raw(rsa, {"alg": "RS256", "kid": "rsa-1", **header}, {"iss": ISSUER})
    assert reason(make_validator(), token) == expected


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt"])
def test_accepted_types(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, typ: str
) -> None:
    assert make_validator().validate(idp.token(header={"typ": typ})).subject == "u-1"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        f"{b64(b'[1]')}.{b64json({})}.",
        f"{b64json({'alg': 'RS256'})}.{b64(b'not json')}.c2ln",
        f"{b64json({'alg': 'RS256'})}.{b64(b'[]')}.c2ln",
        "e30.e30.e30.e30.e30",
    ],
)
def test_malformed(make_validator: Callable[..., OIDCValidator], token: str) -> None:
    assert reason(make_validator(), token) == "malformed token"


def test_tampered_payload(make_validator: Callable[..., OIDCValidator], idp: FakeIdP) -> None:
    head, _, sig = idp.token().split(".")
    forged = b64json({"iss": ISSUER, "sub": "root", "aud": "jitgate", "exp": int(NOW) + 60})
    assert reason(make_validator(), f"{head}.{forged}.{sig}") == "bad signature"


def test_embedded_jwk_is_ignored(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    attacker = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    header = {"jwk": dict(attacker.as_dict(private=False)), "jku": "https://evil.test/jwks"}
    token = idp.token(key=attacker, header=header)
    assert reason(make_validator(), token) == "bad signature"
    assert not any("evil" in path for path in idp.requests)


# ---------------------------------------------------------------------------- keys


def test_kid_of_ec_key_with_rs256(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    attacker = RSAKey.generate_key(2048, parameters={"kid": "ec-1"})
    expected = "signing key does not match algorithm"
    assert reason(make_validator(), idp.token(key=attacker)) == expected


def test_key_alg_parameter_must_match(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    idp.jwks[0]["alg"] = "PS256"
    assert reason(make_validator(), idp.token()) == "signing key does not match algorithm"


def test_unusable_jwks_members_are_ignored(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    weak = rsa_primitives.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    numbers = weak.public_key().public_numbers()
    small = {
        "kty": "RSA",
        "kid": "small",
        "n": b64(numbers.n.to_bytes(128, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }
    enc = RSAKey.generate_key(2048, parameters={"kid": "enc", "use": "enc"})
    oct_key = OctKey.generate_key(256, parameters={"kid": "oct"})
    idp.jwks += [
        small,
        dict(enc.as_dict(private=False)),
        dict(oct_key.as_dict()),
        {"kty": "XYZ", "kid": "future"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not a key",
    ]
    validator = make_validator()
    assert validator.validate(idp.token()).subject == "u-1"
    enc_token = rs256_raw(enc, {"alg": "RS256", "kid": "enc"}, {"iss": ISSUER})
    assert reason(validator, enc_token) == "unknown signing key"
    weak_token = rs256_raw(weak, {"alg": "RS256", "kid": "small"}, {"iss": ISSUER})
    assert reason(validator, weak_token) == "unknown signing key"


def test_token_without_kid(make_validator: Callable[..., OIDCValidator], idp: FakeIdP) -> None:
    rsa = idp.keys["rsa"]
    payload = {"iss": ISSUER, "sub": "u-1", "aud": "jitgate", "exp": int(NOW) + 60}
    token = jwt.encode({"alg": "RS256"}, payload, rsa)
    assert make_validator().validate(token).subject == "u-1"  # one RSA key: unambiguous
    idp.jwks.append(dict(RSAKey.generate_key(2048).as_dict(private=False)))
    assert reason(make_validator(), token) == "unknown signing key"  # two: ambiguous


def test_jwks_cached_then_refreshed(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, clock: Clock
) -> None:
    validator = make_validator(jwks_cache_seconds=600)
    for _ in range(5):
        validator.validate(idp.token())
    assert (idp.count("/openid-configuration"), idp.count("/certs")) == (1, 1)
    clock.now += 601
    validator.validate(idp.token(exp=int(clock.now) + 60))
    assert (idp.count("/openid-configuration"), idp.count("/certs")) == (2, 2)


def test_unknown_kid_refetch_is_rate_limited(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, clock: Clock
) -> None:
    validator = make_validator(jwks_refresh_min_interval=10)
    validator.validate(idp.token())
    for i in range(50):
        forged = RSAKey.generate_key(2048, parameters={"kid": f"forged-{i % 3}"})
        assert reason(validator, idp.token(key=forged)) == "unknown signing key"
        clock.now += 0.1
    assert idp.count("/certs") == 1  # the initial fetch is less than 10 s old throughout
    clock.now += 10
    assert reason(validator, idp.token(key=forged)) == "unknown signing key"
    assert reason(validator, idp.token(key=forged)) == "unknown signing key"
    assert idp.count("/certs") == 2


def test_new_kid_accepted_after_refetch(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, clock: Clock
) -> None:
    validator = make_validator(jwks_refresh_min_interval=10)
    validator.validate(idp.token())
    new = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    idp.jwks.insert(0, dict(new.as_dict(private=False)))
    clock.now += 11
    assert validator.validate(idp.token(key=new)).subject == "u-1"
    assert idp.count("/certs") == 2


def test_concurrent_cold_start_fetches_once(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    validator = make_validator()
    token = idp.token()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(5):
                validator.validate(token)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (idp.count("/openid-configuration"), idp.count("/certs")) == (1, 1)


# ---------------------------------------------------------------------------- discovery


def test_discovery_url_with_trailing_slash(keys: dict[str, Key], clock: Clock) -> None:
    idp = FakeIdP(keys, issuer=ISSUER + "/")
    idp.discovery["jwks_uri"] = ISSUER + "/certs"
    with idp.client() as client:
        validator = OIDCValidator(
            OIDCSettings(issuer=ISSUER + "/", audiences=["jitgate"]), http=client, clock=clock
        )
        assert validator.discovery()["issuer"] == ISSUER + "/"
        assert validator.validate(idp.token()).issuer == ISSUER + "/"
    assert idp.requests[0] == "/realms/main/.well-known/openid-configuration"


def test_discovery_issuer_must_match_exactly(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP
) -> None:
    idp.discovery["issuer"] = ISSUER + "/"
    with pytest.raises(Unavailable, match="different issuer"):
        make_validator().discovery()
    with pytest.raises(Unavailable):
        make_validator().validate(idp.token())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda idp: idp.discovery.pop("jwks_uri"),
        lambda idp: idp.discovery.update(jwks_uri="file:///etc/passwd"),
        lambda idp: setattr(idp, "jwks", "nope"),
        lambda idp: setattr(idp, "status", 500),
        lambda idp: setattr(idp, "status", 302),
    ],
)
def test_idp_problems_are_unavailable(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, mutate: Callable[[FakeIdP], Any]
) -> None:
    mutate(idp)
    with pytest.raises(Unavailable):
        make_validator().validate(idp.token())


def test_invalid_json_and_oversized_documents(keys: dict[str, Key]) -> None:
    for body in (b"<html>", b"[]", b"{" + b" " * (600 * 1024) + b"}"):
        transport = httpx.MockTransport(
            lambda request, body=body: httpx.Response(200, content=body)
        )
        with httpx.Client(transport=transport) as client:
            validator = OIDCValidator(OIDCSettings(issuer=ISSUER, audiences=["x"]), http=client)
            with pytest.raises(Unavailable):
                validator.discovery()


def test_unreachable_idp(idp: FakeIdP, clock: Clock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        validator = OIDCValidator(
            OIDCSettings(issuer=ISSUER, audiences=["jitgate"]), http=client, clock=clock
        )
        with pytest.raises(Unavailable, match="unreachable"):
            validator.validate(idp.token())


def test_failures_are_not_retried_within_the_interval(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, clock: Clock
) -> None:
    validator = make_validator(jwks_refresh_min_interval=10)
    idp.status = 503
    for _ in range(5):
        with pytest.raises(Unavailable):
            validator.validate(idp.token())
    assert len(idp.requests) == 1
    idp.status = 200
    clock.now += 10
    assert validator.validate(idp.token()).subject == "u-1"


def test_stale_jwks_and_down_idp_fail_closed(
    make_validator: Callable[..., OIDCValidator], idp: FakeIdP, clock: Clock
) -> None:
    validator = make_validator(jwks_cache_seconds=60)
    validator.validate(idp.token())
    idp.status = 503
    clock.now += 61
    with pytest.raises(Unavailable):
        validator.validate(idp.token(exp=int(clock.now) + 60))


def test_own_client_with_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    validator = OIDCValidator(OIDCSettings(issuer=ISSUER, audiences=["x"], ca_file=ca))
    validator.close()  # built without (deprecation) warnings, which are errors here


# ---------------------------------------------------------------------------- flows (mocked)


class FakeTokenEndpoint:
    """Scripted token/device endpoints for device_flow and refresh."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        self.script = script
        self.forms: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        self.forms.append(form)
        if request.url.path.endswith("/device"):
            return httpx.Response(
                200,
                json={
                    "device_code": "dc",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://idp.test/device",
                    "expires_in": 600,
                    "interval": 2,
                },
            )
        status, body = self.script.pop(0)
        return httpx.Response(status, json=body)


DISCOVERY = {
    "issuer": ISSUER,
    "token_endpoint": f"{ISSUER}/token",
    "device_authorization_endpoint": f"{ISSUER}/device",
}
TOKENS = {
    "access_token": "ACCESS-SECRET",
    "refresh_token": "REFRESH-SECRET",
    "id_token": "ID-SECRET",
    "expires_in": 60,
}


def run_device(script: list[tuple[int, dict[str, Any]]], **kwargs: Any) -> tuple[Any, list[float]]:
    endpoint = FakeTokenEndpoint(script)
    sleeps: list[float] = []
    prompts: list[tuple[str, str, str | None]] = []
    with httpx.Client(transport=httpx.MockTransport(endpoint.handler)) as http:
        result = device_flow(
            DISCOVERY,
            "jitgate-cli",
            ["openid", "offline_access"],
            http=http,
            prompt=lambda *args: prompts.append(args),
            sleep=sleeps.append,
            **kwargs,
        )
    assert prompts == [("https://idp.test/device", "ABCD-EFGH", None)]
    assert endpoint.forms[0] == {"client_id": "jitgate-cli", "scope": "openid offline_access"}
    assert endpoint.forms[1]["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"
    return result, sleeps


def test_device_flow_polls_with_interval_and_slow_down() -> None:
    pending = (400, {"error": "authorization_pending"})
    slow = (400, {"error": "slow_down"})
    tokens, sleeps = run_device([pending, slow, pending, (200, TOKENS)])
    assert sleeps == [2, 2, 7, 7]
    assert tokens.access_token == "ACCESS-SECRET"
    assert (tokens.refresh_token, tokens.id_token) == ("REFRESH-SECRET", "ID-SECRET")
    assert "SECRET" not in repr(tokens)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": "access_denied", "error_description": "user said no"}, "access_denied: user"),
        ({"error": "expired_token"}, "expired_token"),
        ({"error": "invalid_grant", "error_description": "bad\x1b[31m" + "x" * 500}, "bad[31m"),
    ],
)
def test_device_flow_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(Unauthenticated, match=message.replace("[", r"\[")) as info:
        run_device([(400, body)])
    assert len(info.value.message) < 300
    assert "\x1b" not in info.value.message


def test_device_flow_times_out() -> None:
    with pytest.raises(Unauthenticated, match="timed out"):
        run_device([(400, {"error": "authorization_pending"})] * 10, timeout=7)


def test_device_flow_without_endpoint() -> None:
    with httpx.Client() as http, pytest.raises(Unavailable, match="device_authorization"):
        device_flow({"issuer": ISSUER}, "c", ["openid"], http=http, prompt=lambda *a: None)


def test_refresh_keeps_old_refresh_token_when_none_returned() -> None:
    endpoint = FakeTokenEndpoint([(200, {"access_token": "at2", "token_type": "Bearer"})])
    with httpx.Client(transport=httpx.MockTransport(endpoint.handler)) as http:
        tokens = refresh(DISCOVERY, "jitgate-cli", "rt1", http=http)
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_at) == ("at2", "rt1", None)
    assert endpoint.forms == [
        {"grant_type": "refresh_token", "refresh_token": "rt1", "client_id": "jitgate-cli"}
    ]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant"}, Unauthenticated),
        (200, {"token_type": "Bearer"}, Unavailable),
        (502, {"oops": 1}, Unavailable),
    ],
)
def test_refresh_errors(status: int, body: dict[str, Any], error: type[Exception]) -> None:
    endpoint = FakeTokenEndpoint([(status, body)])
    transport = httpx.MockTransport(endpoint.handler)
    with httpx.Client(transport=transport) as http, pytest.raises(error):
        refresh(DISCOVERY, "jitgate-cli", "rt1", http=http)


def test_pkce_verifier_and_challenge() -> None:
    verifier = new_code_verifier()
    assert len(verifier) == 64
    assert set(verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert new_code_verifier() != verifier
    # RFC 7636 appendix B
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
