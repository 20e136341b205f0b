import pytest

from jitgate.errors import InvalidInput
from jitgate.identity import secrets as tokens
from jitgate.identity.names import check_identity_name, check_simple_name


def test_token_format_roundtrip() -> None:
    plaintext, parsed = tokens.new_token()
    assert plaintext.startswith("jgt_") and len(plaintext) == tokens.TOKEN_LEN
    again = tokens.parse_token(plaintext)
    assert again == parsed
    assert tokens.digests_match(again.digest(), parsed.digest())


def test_tokens_are_unique() -> None:
    assert len({tokens.new_token()[0] for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "jgt_",
        "jgt_" + "z" * 56,
        "xyz_" + "a" * 56,
        "jgt_" + "a" * 16 + "!" * 40,
        "eyJhbGciOi.x.y",
    ],
)
def test_malformed_tokens(bad: str) -> None:
    assert tokens.parse_token(bad) is None


def test_password_hash_verify() -> None:
    digest = tokens.hash_password("correct horse")
    assert digest.startswith("$argon2id$")
    assert tokens.verify_password(digest, "correct horse")
    assert not tokens.verify_password(digest, "wrong horse")
    assert not tokens.verify_password(None, "anything")
    assert not tokens.verify_password("garbage", "anything")


@pytest.mark.parametrize("name", ["alice", "ci-bot", "a.b_c@example.com", "X1"])
def test_good_names(name: str) -> None:
    assert check_identity_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-lead", "robert'); DROP TABLE users;--", "a b", "a+b", "x" * 129, "é"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_identity_name(name)
    with pytest.raises(InvalidInput):
        check_simple_name(name)
