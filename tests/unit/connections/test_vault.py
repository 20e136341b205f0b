import base64

import pytest

from jitgate.connections.vault import (
    MasterKey,
    Vault,
    VaultError,
    format_keyring,
    parse_keyring,
)


def test_seal_open_roundtrip_and_ciphertext_hides_plaintext() -> None:
    vault = Vault([MasterKey.generate()])
    blob = vault.seal(b"hunter2-password", context="connection:1")
    assert b"hunter2" not in blob
    assert vault.open(blob, context="connection:1") == b"hunter2-password"


def test_nonces_differ_each_time() -> None:
    vault = Vault([MasterKey.generate()])
    assert vault.seal(b"x", context="c") != vault.seal(b"x", context="c")


def test_blob_bound_to_its_record() -> None:
    vault = Vault([MasterKey.generate()])
    blob = vault.seal(b"secret", context="connection:1")
    with pytest.raises(VaultError, match="authentication"):
        vault.open(blob, context="connection:2")


def test_tampered_blob_rejected() -> None:
    vault = Vault([MasterKey.generate()])
    blob = bytearray(vault.seal(b"secret", context="c"))
    blob[-1] ^= 1
    with pytest.raises(VaultError):
        vault.open(bytes(blob), context="c")
    with pytest.raises(VaultError, match="malformed"):
        vault.open(b"JGV1short", context="c")


def test_wrong_key_names_key_id_not_material() -> None:
    key_a, key_b = MasterKey.generate(), MasterKey.generate()
    blob = Vault([key_a]).seal(b"secret", context="c")
    with pytest.raises(VaultError) as excinfo:
        Vault([key_b]).open(blob, context="c")
    assert key_a.key_id in str(excinfo.value)
    assert key_a.encode() not in str(excinfo.value)


def test_rotation_reseals_under_new_key_old_blobs_still_open() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    blob = Vault([old]).seal(b"secret", context="c")
    ring = Vault([new, old])
    assert ring.open(blob, context="c") == b"secret"
    resealed = ring.reseal(blob, context="c")
    assert Vault.key_id_of(resealed) == new.key_id
    assert Vault([new]).open(resealed, context="c") == b"secret"


def test_keyring_text_roundtrip_and_formats() -> None:
    keys = [MasterKey.generate(), MasterKey.generate()]
    assert [k.key_id for k in parse_keyring(format_keyring(keys))] == [k.key_id for k in keys]
    comma = ",".join(k.encode() for k in keys)
    assert [k.key_id for k in parse_keyring(comma)] == [k.key_id for k in keys]
    urlsafe = base64.urlsafe_b64encode(keys[0].material).decode().rstrip("=")
    assert parse_keyring(urlsafe)[0].key_id == keys[0].key_id


@pytest.mark.parametrize("text", ["", "# only a comment\n", "not base64!!", "c2hvcnQ="])
def test_bad_keyring(text: str) -> None:
    with pytest.raises(VaultError):
        parse_keyring(text)


def test_master_key_repr_hides_material() -> None:
    key = MasterKey.generate()
    assert key.encode() not in repr(key)
