"""What a session record holds: who, as whom, where from, under which grant, what was
asked, what was decided and what came back — the rows as the client saw them (masked)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg import errors

from jitgate.config import RecordingSettings
from jitgate.recording.recorder import SessionMeta
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, PgGateway
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

EMAIL = "carol.jones@example.com"
SSN = "321-54-9876"


@pytest.fixture
def masked(pg_gateway: PgGateway, pg_scram: PgCluster) -> tuple[str, str]:
    """A connection masked with the ``pii`` profile and a table with personal data."""
    name = pg_gateway.add_connection(pg_scram).name
    table = f"people_{name.replace('-', '_')}"
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, name text, email text, ssn text)")
        conn.execute(
            f"INSERT INTO {table} VALUES (1, 'Carol', %s, %s), (2, 'Dan', NULL, 'n/a')",
            (EMAIL, SSN),
        )
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "pii"})
    return name, table


def test_session_row_and_events_say_who_where_and_under_which_grant(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    gw = pg_gateway.gateway
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    token = pg_gateway.add_user("rec-erin")
    who = gw.authenticator.authenticate(token)
    grant = gw.access.break_glass(
        who, name, reason="INC-4242 database on fire", duration=timedelta(minutes=5)
    )
    with psycopg.connect(
        pg_gateway.dsn(name, token=token, user="rec-erin", application_name="erin-cli"),
        autocommit=True,
    ) as conn:
        conn.execute("SELECT 1")
        conn.execute("SELECT 'x' FROM generate_series(1, 3)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE nothing_here")
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
    row = pg_gateway.session(name)
    assert (row.identity_name, row.client_program, row.client_addr) == (
        "rec-erin",
        "erin-cli",
        "127.0.0.1",
    )
    assert row.grant_ids == [grant.id]
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert row.end_reason == "client terminated"
    assert row.bytes_in > 0 and row.bytes_out > row.bytes_in
    assert row.counts == {"allow": 3, "deny": 1, "error": 1}
    assert row.recording_state == "ok" and row.seal_signature

    start = pg_gateway.events(row)[0]
    assert start["grant_ids"] == [grant.id] and start["client_port"] > 0
    api = console.get(f"/api/v1/sessions/{row.id}").json()
    assert api["grant_ids"] == [grant.id] and api["signed"] and api["recording"] == "ok"


def test_result_sample_is_what_the_client_was_sent(
    pg_gateway: PgGateway, masked: tuple[str, str], console: Console
) -> None:
    name, table = masked
    seen = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-A", "-t", "-F", " | ", "-c",
         f"SELECT id, name, email, ssn FROM {table} ORDER BY id"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert EMAIL not in "".join(seen) and "[REDACTED:email]" in seen[0]
    row = pg_gateway.session(name)
    result = next(e for e in pg_gateway.events(row) if e["type"] == "result")
    sample = result["sample"]
    assert sample["columns"] == ["id", "name", "email", "ssn"]
    rendered = [" | ".join("" if c is None else c for c in r) for r in sample["rows"]]
    assert rendered == seen
    assert result["masked_values"] >= 2 and row.counts["masked_values"] >= 2
    raw = pg_gateway.recording_path(row).read_text()
    assert EMAIL not in raw and SSN not in raw

    # The replay shows the same (masked) rows.
    replay = console.cli("sessions", "replay", row.id, "--speed", "1000", check=True).stdout
    assert f"SELECT id, name, email, ssn FROM {table} ORDER BY id" in replay
    for line in seen:
        assert line in replay.replace("NULL", "")  # psql prints NULL as nothing
    assert EMAIL not in replay and SSN not in replay


def test_sample_is_capped_by_rows_and_bytes(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    recorder = pg_gateway.gateway.recorder
    default = recorder.settings
    name = pg_gateway.add_connection(pg_scram).name
    recorder.settings = RecordingSettings(sample_rows=3, sample_bytes=40)
    try:
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            assert len(conn.execute("SELECT g FROM generate_series(1, 50) g").fetchall()) == 50
            conn.execute("SELECT repeat('y', 30) FROM generate_series(1, 5)")
            conn.execute("SELECT repeat('z', 100)")
    finally:
        recorder.settings = default
    results = [e for e in pg_gateway.events(pg_gateway.session(name)) if e["type"] == "result"]
    first, second, third = (r["sample"] for r in results)
    assert first == {"columns": ["g"], "rows": [["1"], ["2"], ["3"]], "truncated": True}
    assert results[0]["rows"] == 50
    assert second["rows"] == [["y" * 30]] and second["truncated"]  # 40 bytes: one row fits
    assert third["rows"] == [] and third["truncated"]


def test_replay_outputs(pg_gateway: PgGateway, pg_scram: PgCluster, console: Console) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 'first'")
        conn.execute("SELECT 'second'")
    row = pg_gateway.session(name)
    cast = console.cli("sessions", "replay", row.id, "-o", "asciicast", check=True).stdout
    header, *frames = (json.loads(line) for line in cast.splitlines())
    assert header["version"] == 2 and header["width"] > 0
    times = [f[0] for f in frames]
    assert times == sorted(times) and all(f[1] == "o" for f in frames)
    assert any("SELECT 'second'" in f[2] for f in frames)
    events = json.loads(console.cli("sessions", "replay", row.id, "-o", "json", check=True).stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    show = console.cli("sessions", "show", row.id, check=True).stdout
    assert "ALLOW  SELECT 'first'" in show and "signed" in show


def test_terminal_session_replays_with_its_timing(pg_gateway: PgGateway, console: Console) -> None:
    """A terminal recorded through the recorder (as the SSH listener does) replays its
    output with the original pauses, faster with --speed, shorter with --skip-idle."""
    gw = pg_gateway.gateway
    meta = SessionMeta(
        protocol="ssh", connection_id=None, connection_name="term-box", identity_id="x",
        identity_name="admin", actor_id=None, actor_name=None, auth_method="api_token",
        token_id=None, client_addr="127.0.0.1", client_program="OpenSSH",
    )  # fmt: skip

    async def record() -> str:
        rec = await gw.recorder.open(meta)
        rec.resize(80, 24)
        rec.terminal("o", "$ ")
        rec.terminal("i", "date\r")
        await asyncio.sleep(0.6)
        rec.terminal("o", "Sun Nov 29\r\n")
        await asyncio.sleep(0.6)
        rec.terminal("o", "$ ")
        await rec.close("client disconnected", 5, 20)
        return rec.session_id

    session_id = pg_gateway.call(record())

    def replay(*args: str) -> tuple[float, str]:
        start = time.monotonic()
        out = console.cli("sessions", "replay", session_id, *args, check=True).stdout
        return time.monotonic() - start, out

    # The CLI's own start-up time varies from run to run: the quickest of two instant
    # replays is the baseline, so noise can only lengthen the timed replays.
    baseline = min(replay("--speed", "1000")[0] for _ in range(2))
    slow, out = replay()
    assert out == "$ Sun Nov 29\n$ "  # what the client saw (no input); text mode: \r\n → \n
    assert slow - baseline >= 1.0  # the recording paused 1.2 s in all
    fast, _ = replay("--speed", "4")
    assert fast - baseline < 0.8
    skipped, _ = replay("--skip-idle", "0.1")
    assert skipped - baseline < 0.8
    cast = console.cli("sessions", "replay", session_id, "-o", "asciicast", check=True).stdout
    header, *frames = (json.loads(line) for line in cast.splitlines())
    assert (header["width"], header["height"]) == (80, 24)
    assert [f[1] for f in frames] == ["r", "o", "i", "o", "o"]
    assert frames[3][0] - frames[2][0] >= 0.55


def test_grant_changes_during_a_session_are_recorded(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    gw = pg_gateway.gateway
    name = pg_gateway.add_connection(pg_scram).name
    token = pg_gateway.add_user("rec-gina")
    who = gw.authenticator.authenticate(token)
    with psycopg.connect(pg_gateway.dsn(name, token=token), autocommit=True) as conn:
        conn.execute("SELECT 1")
        grant = gw.access.break_glass(
            who, name, reason="INC-77 checking a thing", duration=timedelta(minutes=5)
        )
        conn.execute("SELECT 2")
        # The session hears of the new grant on its own time; a grant revoked before the
        # session ever counted it would (rightly) leave no change in its recording.
        _wait_for_grant_event(pg_gateway, name, "added")
        gw.access.revoke_grant(None, grant.id, reason="done")
        _wait_for_grant_event(pg_gateway, name, "ended")
    events = [e for e in pg_gateway.events(pg_gateway.session(name)) if e["type"] == "grants"]
    assert [(e["added"], e["ended"]) for e in events] == [([grant.id], []), ([], [grant.id])]
    row = pg_gateway.session(name)
    show = console.cli("sessions", "show", row.id, check=True).stdout
    assert f"grants changed: +{grant.id}" in show and f"-{grant.id}" in show


def _wait_for_grant_event(gw: PgGateway, name: str, change: str) -> None:
    deadline = time.monotonic() + 5
    while not any(e["type"] == "grants" and e[change] for e in _open_events(gw, name)):
        assert time.monotonic() < deadline, f"the grant change ({change}) was not recorded"
        time.sleep(0.05)


def _open_events(gw: PgGateway, name: str) -> list[dict[str, object]]:
    return gw.events(gw.session(name, ended=False))
