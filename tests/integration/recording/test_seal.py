"""Recordings of real sessions are sealed with the gateway's Ed25519 key; ``jitgate audit
verify`` and the API check chain and signature and name the first altered event."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import psycopg
import pytest

from jitgate.recording.log import chain_hash
from jitgate.recording.seal import verify_recording
from tests.fixtures.postgres_gateway import PgGateway
from tests.integration.postgres.test_psql import psql
from tests.integration.recording.conftest import Console, tamper
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def _recorded_psql_session(pg_gateway: PgGateway, pg_scram: PgCluster) -> tuple[str, str]:
    name = pg_gateway.add_connection(pg_scram).name
    out = psql(pg_gateway, name, "-c", "SELECT 'evidence-41' AS word", "-c", "SELECT 2 + 2")
    assert out.stdout.split() == ["evidence-41", "4"]
    return name, pg_gateway.session(name).id


def test_a_closed_session_is_sealed_and_verifies(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name, session_id = _recorded_psql_session(pg_gateway, pg_scram)
    row = pg_gateway.session(name)
    events = pg_gateway.events(row)
    seal, end = events[-1], events[-2]
    assert (seal["type"], end["type"]) == ("seal", "session.end")
    assert seal["digest"] == end["hash"] == row.seal_digest
    assert seal["last_seq"] == end["seq"] and row.event_count == seal["seq"]
    assert seal["kid"] == pg_gateway.gateway.signing_key.key_id == row.seal_key_id

    # The verification key is the one the API publishes.
    keys = console.get("/api/v1/keys").json()["keys"]
    jwks = {k["kid"]: k for k in keys}
    assert seal["kid"] in jwks and jwks[seal["kid"]]["crv"] == "Ed25519"
    offline = verify_recording(pg_gateway.recording_path(row), session_id, jwks)
    assert offline.valid and offline.signature == "valid"

    result = console.get(f"/api/v1/sessions/{session_id}/verify").json()
    assert result["valid"] and result["chain_valid"] and result["signature"] == "valid"
    done = console.cli("audit", "verify", session_id)
    assert done.returncode == 0, done.stderr
    assert "recording intact" in done.stdout and "signed" in done.stdout


def test_one_altered_byte_is_named_by_verify(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name, session_id = _recorded_psql_session(pg_gateway, pg_scram)
    row = pg_gateway.session(name)
    path = pg_gateway.recording_path(row)
    target = next(e for e in pg_gateway.events(row) if "evidence-41" in str(e.get("text")))
    tamper(path, target["seq"], b"evidence-41", b"evidence-42")

    result = console.get(f"/api/v1/sessions/{session_id}/verify").json()
    assert not result["valid"] and not result["chain_valid"]
    assert result["first_bad_event"] == target["seq"]
    assert "does not match its hash" in result["problem"]
    done = console.cli("audit", "verify", session_id)
    assert done.returncode == 1
    assert f"event {target['seq']}:" in done.stderr and "Traceback" not in done.stderr


def test_a_removed_or_forged_seal_fails(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 1")
    row = pg_gateway.session(name)
    path = pg_gateway.recording_path(row)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)

    # Truncated: the seal line is gone; what is left is a valid chain, but the session row
    # remembers the seal.
    path.write_bytes(b"".join(lines[:-1]))
    result = console.get(f"/api/v1/sessions/{row.id}/verify").json()
    assert result["chain_valid"] and not result["valid"]
    assert result["signature"] == "missing" and result["first_bad_event"] == len(lines)
    done = console.cli("audit", "verify", row.id)
    assert done.returncode == 1 and "seal" in done.stderr

    # A tail of events cut off with the seal: same answer, naming the first missing event.
    path.write_bytes(b"".join(lines[:-3]))
    result = console.get(f"/api/v1/sessions/{row.id}/verify").json()
    assert not result["valid"] and result["first_bad_event"] == len(lines) - 2

    # The signature replaced (and the chain re-computed by a forger who has no key).
    seal = orjson.loads(lines[-1])
    seal["signature"] = "A" * len(seal["signature"])
    seal["hash"] = chain_hash(seal["prev"], seal)
    forged = orjson.dumps(seal, option=orjson.OPT_SORT_KEYS) + b"\n"
    path.write_bytes(b"".join(lines[:-1]) + forged)
    result = console.get(f"/api/v1/sessions/{row.id}/verify").json()
    assert result["chain_valid"] and not result["valid"]
    assert result["signature"] == "invalid" and result["first_bad_event"] == len(lines)

    path.write_bytes(original)
    assert console.get(f"/api/v1/sessions/{row.id}/verify").json()["valid"]


def test_offline_verification_with_the_published_keys(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console, tmp_path: Path
) -> None:
    """An auditor keeps the events and the JWKS; the check needs no gateway afterwards."""
    _name, session_id = _recorded_psql_session(pg_gateway, pg_scram)
    events = console.cli("sessions", "replay", session_id, "-o", "json", check=True).stdout
    keys = tmp_path / "keys.json"
    keys.write_text(console.get("/api/v1/keys").text)
    copy = tmp_path / "recording.json"
    copy.write_text(events)
    args = ("audit", "verify", session_id, "--file", str(copy), "--keys", str(keys))
    done = console.cli(*args)
    assert done.returncode == 0 and "signed" in done.stdout, done.stderr
    altered = json.loads(events)
    target = next(e for e in altered if "evidence-41" in str(e.get("text")))
    target["text"] = target["text"].replace("evidence-41", "evidence-40")
    copy.write_text(json.dumps(altered))
    done = console.cli(*args)
    assert done.returncode == 1 and f"event {target['seq']}:" in done.stderr
    # without the seal (cut off), offline: the recording is not sealed
    # (interrupted, exit 3: nothing altered is found, but the end is not proven)
    copy.write_text(json.dumps(json.loads(events)[:-1]))
    done = console.cli(*args)
    assert done.returncode == 3 and "interrupted: chain intact but not sealed" in done.stderr
