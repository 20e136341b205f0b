"""Sealing and verifying a recording, and the event log's behaviour on write failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jitgate.identity.signing import SigningKey
from jitgate.recording.log import EventLog, verify_chain
from jitgate.recording.seal import SEAL_TYPE, b64url, seal_message, verify_recording


def _sealed(path: Path, key: SigningKey, session: str = "s-1", n: int = 3) -> None:
    log = EventLog(path, session)
    for i in range(n):
        log.append("request", {"text": f"SELECT {i}"})
    digest, last = log.head, log.seq
    signature = key.sign_bytes(seal_message(session, last, last, digest))
    log.append(
        SEAL_TYPE,
        {"session": session, "last_seq": last, "events": last, "digest": digest,
         "alg": "Ed25519", "kid": key.key_id, "signature": b64url(signature)},
    )  # fmt: skip
    log.close()


def test_seal_verifies_with_the_published_key_only(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "r.jsonl"
    _sealed(path, key)
    assert verify_recording(path, "s-1", {key.key_id: key.public_jwk()}).valid
    # the same seal checked with another key id → unknown key; with another key's bytes
    # under our key id → invalid signature
    assert verify_recording(path, "s-1", {other.key_id: other.public_jwk()}).signature == (
        "unknown-key"
    )
    forged = verify_recording(path, "s-1", {key.key_id: other.public_jwk()})
    assert not forged.valid and forged.signature == "invalid" and forged.first_bad_event == 4
    # a recording checked under another session id fails at its first event
    moved = verify_recording(path, "s-2", {key.key_id: key.public_jwk()})
    assert not moved.valid and moved.first_bad_event == 1


def test_unsealed_recording_is_pending_while_open_and_invalid_after(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    log = EventLog(path, "s")
    log.append("request", {"text": "SELECT 1"})
    log.close()
    assert verify_recording(path, "s", {}, open_session=True).signature == "pending"
    closed = verify_recording(path, "s", {})
    assert not closed.valid and closed.signature == "missing"


def test_failed_write_keeps_its_bytes_for_the_next_flush(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    log = EventLog(path, "s")
    log.append("request", {"text": "SELECT 1"})
    log.flush()
    assert log._fd is not None
    saved = os.dup(log._fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, log._fd)  # the disk is full
    log.append("request", {"text": "SELECT 2"})
    with pytest.raises(OSError):
        log.flush()
    assert log.failed is not None and log.pending
    os.dup2(saved, log._fd)  # space again
    log.flush()
    assert log.failed is None
    log.close()
    os.close(full)
    os.close(saved)
    assert verify_chain(path, "s") == (True, None, None)
    assert path.read_text().count("SELECT") == 2
