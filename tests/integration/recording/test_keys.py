"""Signing keys of every node, past and present, kept in the store: a seal made by one
node's key (or by a key replaced since) verifies by its kid; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from jitgate.identity.signing import SigningKey
from jitgate.recording import keys
from jitgate.recording.log import EventLog
from jitgate.recording.seal import SEAL_TYPE, b64url, seal_message, verify_recording
from jitgate.store.db import Store


def sealed_recording(path: Path, session_id: str, key: SigningKey) -> Path:
    """A two-event recording sealed by ``key``, as the recorder seals one."""
    log = EventLog(path, session_id)
    log.append("session.start", {"session": session_id})
    log.append("request", {"request": 1, "text": "SELECT 1", "decision": "allow"})
    digest, last = log.head, log.seq
    signature = key.sign_bytes(seal_message(session_id, last, last, digest))
    log.append(
        SEAL_TYPE,
        {"session": session_id, "last_seq": last, "events": last, "digest": digest,
         "alg": "Ed25519", "kid": key.key_id, "signature": b64url(signature)},
    )  # fmt: skip
    log.close()
    return path


def test_a_seal_by_another_or_an_earlier_key_verifies_by_its_kid(
    store: Store, tmp_path: Path
) -> None:
    key_a, key_b, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    keys.publish(store, key_a, node_id="node-1")
    keys.publish(store, key_a, node_id="node-1")  # each start publishes it again: kept once
    recording = sealed_recording(tmp_path / "a.jsonl", "s-a", key_a)

    # The node now signs with key B (a new key, or another node): A's seal still verifies.
    keys.publish(store, key_b, node_id="node-2")
    by_kid = keys.known(store, key_b)
    assert set(by_kid) == {key_a.key_id, key_b.key_id}
    result = verify_recording(recording, "s-a", by_kid)
    assert result.valid and result.signature == "valid" and result.key_id == key_a.key_id
    only_current = verify_recording(recording, "s-a", {key_b.key_id: key_b.public_jwk()})
    assert only_current.signature == "unknown-key"  # what it was before keys were kept
    unknown = sealed_recording(tmp_path / "x.jsonl", "s-x", stranger)
    assert verify_recording(unknown, "s-x", by_kid).signature == "unknown-key"

    published = keys.jwks(store, key_b)
    assert [k["kid"] for k in published] == [key_b.key_id, key_a.key_id]  # current first
    assert all(k["kty"] == "OKP" and "d" not in k and k["created_at"] for k in published)
    offline = {k["kid"]: k for k in published}  # as `audit verify --keys` reads the JWKS
    assert verify_recording(recording, "s-a", offline).valid


def test_the_current_key_is_listed_even_when_not_published(store: Store) -> None:
    current = SigningKey.generate()
    assert [k["kid"] for k in keys.jwks(store, current)] == [current.key_id]
    assert set(keys.known(store, current)) == {current.key_id}
