"""Credential detectors: only the secret part of ``name=value`` or a header is reported."""

from __future__ import annotations

import base64
import json

import pytest

from jitgate.masking import detect


def secrets(text: str) -> list[str]:
    return [f.text for f in detect(text, ["secret"])]


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


JWT = f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url({'sub': '42'})}.c2lnbmF0dXJlX2J5dGVz"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA7bq7ZxN0a3h6Y2V4bXBsZWtleWRhdGFoZXJlMTIzNDU2Nzg5\n"
    "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_aws_access_key_id_and_nearby_secret_key() -> None:
    text = "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert secrets(text) == ["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
    assert secrets("temp ASIAY34FZKBOKMUTVV7A") == ["ASIAY34FZKBOKMUTVV7A"]


def test_aws_secret_key_needs_context() -> None:
    alone = "blob wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end"
    assert secrets(alone) == []
    named = 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'
    assert secrets(named) == ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]


def test_aws_context_does_not_take_a_sha1() -> None:
    text = "AKIAIOSFODNN7EXAMPLE aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    assert secrets(text) == ["AKIAIOSFODNN7EXAMPLE"]


def test_pem_private_key_block_plain_json_and_truncated() -> None:
    assert secrets(f"key:\n{PEM}\nend") == [PEM]
    escaped = json.dumps({"private_key": PEM})
    found = secrets(escaped)
    assert len(found) == 1 and found[0].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert found[0].endswith("-----END RSA PRIVATE KEY-----")
    truncated = PEM.split("-----END")[0]
    assert secrets(truncated)[0].startswith("-----BEGIN RSA PRIVATE KEY-----\nMIIE")
    public = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----"
    assert secrets(public) == []


def test_jwt_needs_a_header_with_alg() -> None:
    assert secrets(f"token {JWT} end") == [JWT]
    no_alg = f"{_b64url({'typ': 'JWT'})}.{_b64url({'sub': '1'})}.sig"
    assert secrets(no_alg) == []
    assert secrets("eyJub3QganNvbg.eyJ4IjoxfQ.sig") == []


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Authorization: Bearer abc123DEF456ghi", "abc123DEF456ghi"),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ('{"Authorization": "Bearer x-9_y.z~w+v/u"}', "x-9_y.z~w+v/u"),
        ("send bearer 0a1b2c3d4e5f", "0a1b2c3d4e5f"),
    ],
)
def test_bearer_tokens(text: str, token: str) -> None:
    assert secrets(text) == [token]


def test_bearer_as_an_english_word_is_not_a_token() -> None:
    assert secrets("the bearer instrument was lost") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("password=hunter2", "hunter2"),
        ("db_password: s3cr3t!", "s3cr3t!"),
        ('{"password": "correct horse"}', "correct horse"),
        ("{'secret': 'shh'}", "shh"),
        ("MYSQL_ROOT_PASSWORD=rootpw", "rootpw"),
        ("api_key=AbCdEf123", "AbCdEf123"),
        ("client-secret => xyz789", "xyz789"),
        ('"{\\"token\\":\\"t0k3n\\"}"', "t0k3n"),
        ("url?user=bob&passwd=pa55&x=1", "pa55"),
    ],
)
def test_secret_assignments_report_only_the_value(text: str, value: str) -> None:
    assert secrets(text) == [value]


@pytest.mark.parametrize(
    "text",
    ["passenger=3", "bypass=1", "password=", "password: null", "token_count: 5",
     "tokens=12", "password=${DB_PASSWORD}", "password=[REDACTED:secret]"],
)  # fmt: skip
def test_not_secret_assignments(text: str) -> None:
    assert secrets(text) == []


@pytest.mark.parametrize(
    "token",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-123456789012-abcdefghijABCD",
        "sk_live_" + "a1B2c3D4" * 3,
        "rk_test_" + "Z9y8X7w6" * 3,
        "glpat-abcdefghij0123456789",
        "npm_" + "a1B2c3" * 6,
        "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    ],
)
def test_vendor_prefixed_tokens(token: str) -> None:
    assert secrets(f"leaked {token} here") == [token]


def test_url_password() -> None:
    assert secrets("dsn postgres://app:s3cret@db.internal:5432/prod") == ["s3cret"]
