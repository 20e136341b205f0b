"""Sealing and verifying a recording, and the event log's behaviour on write failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jitgate.identity.signing import SigningKey
from jitgate.recording.log import EventLog, verify_chain
from jitgate.recording.seal import (
    SEAL_TYPE,
    StoredSeal,
    b64url,
    seal_message,
    verify_recording,
)


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


def test_unsealed_recording_is_open_while_open_and_interrupted_after(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    log = EventLog(path, "s")
    log.append("request", {"text": "SELECT 1"})
    log.append("request", {"text": "SELECT 2"})
    log.close()
    opened = verify_recording(path, "s", {}, open_session=True)
    assert (opened.valid, opened.state, opened.signature) == (True, "open", "pending")
    with path.open("ab") as fh:  # the writer is half way through its next line
        fh.write(b'{"at":"2026')
    assert verify_recording(path, "s", {}, open_session=True).state == "open"
    assert verify_recording(path, "s", {}).state == "tampered"  # not once it is closed
    path.write_bytes(path.read_bytes().rsplit(b"\n", 1)[0] + b"\n")
    closed = verify_recording(path, "s", {})
    assert (closed.valid, closed.state, closed.signature) == (True, "interrupted", "missing")
    assert closed.problem and "not sealed" in closed.problem
    # When recovery counted its events, a cut-off end is found.
    cut = verify_recording([path.read_bytes().splitlines(True)[0]], "s", {}, stored=StoredSeal(
        None, None, None, 2))  # fmt: skip
    assert (cut.valid, cut.state, cut.first_bad_event) == (False, "tampered", 2)


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
