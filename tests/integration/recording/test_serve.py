"""Recording in a real ``jitgate serve`` process: the audit export job across a restart,
a gateway killed (SIGKILL) while a statement runs, and one killed with its recording
writer process while records still waited in their spool ring."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.test_postgres_gateway import add_connection, client_env
from tests.support.pgcluster import PgCluster
from tests.support.served import Served, start_gateway, stop, wait_ready

pytestmark = pytest.mark.postgres

EXPORT_CONFIG = "recording:\n  export_to: file:{out}\n  export_interval_seconds: 0.2\n"


class Gateway:
    def __init__(
        self, data_dir: Path, out: Path, database_url: str | None = None, extra_config: str = ""
    ) -> None:
        self.data_dir, self.out = data_dir, out
        self.database_url = database_url
        self.extra_config = extra_config
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> tuple[Served, int]:
        config = EXPORT_CONFIG.format(out=self.out) + self.extra_config
        if self.database_url:
            config += f"database_url: {json.dumps(self.database_url)}\n"
        self.proc = start_gateway(self.data_dir, extra_config=config)
        api = wait_ready(self.proc, self.data_dir)
        token = (self.data_dir / "admin.token").read_text().strip()
        state = json.loads((self.data_dir / "serve.json").read_text())
        port = int(state["listeners"]["postgres"].rsplit(":", 1)[1])
        return Served(self.proc, self.data_dir, api, token), port

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path / "data", tmp_path / "audit.jsonl")
    yield gw
    gw.close()


@pytest.fixture
def pg_store_gateway(tmp_path: Path, pg_admin_dsn: str) -> Iterator[Gateway]:
    """A gateway whose store is a fresh database on a real PostgreSQL server."""
    name = f"jitgate_serve_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(pg_admin_dsn)
    url = f"postgresql://{info.get('user', 'postgres')}@{info['host']}:{info['port']}/{name}"
    gw = Gateway(tmp_path / "data", tmp_path / "audit.jsonl", database_url=url)
    yield gw
    gw.close()
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def psql(served: Served, port: int, sql: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "admin", "-d", "rec", "-c", sql],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=client_env(served.admin_token, PGSSLMODE="disable"),
    )  # fmt: skip


def exported(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


def wait_exported(
    out: Path, text: str, *, sealed: bool = True, timeout: float = 15
) -> list[dict[str, object]]:
    """Wait until the export holds the (sealed) session that ran ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        records = exported(out)
        sessions = {r["session"] for r in records if r.get("text") == text}
        if sessions and (not sealed or any(
            r.get("type") == "seal" and r["session"] in sessions for r in records
        )):  # fmt: skip
            return records
        assert time.monotonic() < deadline, f"{text!r} was not exported"
        time.sleep(0.1)


def test_export_job_survives_restart_and_crash(gateway: Gateway, pg_scram: PgCluster) -> None:
    served, port = gateway.start()
    add_connection(served, "rec", pg_scram)
    assert psql(served, port, "SELECT 'one'").communicate(timeout=30)[0]
    wait_exported(gateway.out, "SELECT 'one'")
    assert stop(served.proc)[0] == 0

    served, port = gateway.start()
    assert psql(served, port, "SELECT 'two'").communicate(timeout=30)[0]
    wait_exported(gateway.out, "SELECT 'two'")

    # Killed while a statement runs: the statement is in the recording, and after the
    # restart the interrupted session is closed (unsealed) and exported too.
    client = psql(served, port, "SELECT 'three', pg_sleep(30)")
    wait_running(pg_scram, "three")
    assert served.proc is not None
    served.proc.kill()
    served.proc.communicate(timeout=10)
    client.communicate(timeout=10)
    (served.data_dir / "serve.json").unlink()  # what the killed process left: not the next's
    assert client.returncode != 0

    served, port = gateway.start()
    wait_exported(gateway.out, "SELECT 'three', pg_sleep(30)", sealed=False)
    assert stop(served.proc)[0] == 0
    records = exported(gateway.out)
    ids = [str(r["export_id"]) for r in records]
    assert len(ids) == len(set(ids))  # clean stops and a crash: nothing exported twice
    sessions: dict[str, list[dict[str, object]]] = {}
    for record in records:
        if record["source"] == "session":
            sessions.setdefault(str(record["session"]), []).append(record)
    assert len(sessions) == 3
    for events in sessions.values():  # every session whole and in order
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    crashed = next(ev for ev in sessions.values() if ev[-1].get("kind") == "recovery")
    assert [e["type"] for e in crashed[-3:]] == ["request", "session.recovered", "seal"]
    assert crashed[-3]["text"] == "SELECT 'three', pg_sleep(30)"

    served, _port = gateway.start()
    crashed_id = str(crashed[0]["session"])
    shown = json.loads(served.cli("sessions", "list", "-o", "json").stdout)
    row = next(s for s in shown if s["id"] == crashed_id)
    assert row["recording"] == "recovered" and row["end_reason"].startswith("interrupted")
    verify = served.cli("audit", "verify", crashed_id, check=False)
    assert verify.returncode == 0, verify.stderr
    assert "recovered: recording intact, signed at recovery" in verify.stdout
    # The exported events end with the recovery seal; one byte of the statement changed in
    # the stored recording is named.
    recording = next(gateway.data_dir.rglob(f"{crashed_id}.jsonl"))
    seq = next(e["seq"] for e in crashed if e.get("text") == "SELECT 'three', pg_sleep(30)")
    lines = recording.read_bytes().splitlines(keepends=True)
    lines[int(str(seq)) - 1] = lines[int(str(seq)) - 1].replace(b"'three'", b"'thrEe'")
    recording.write_bytes(b"".join(lines))
    altered = served.cli("audit", "verify", crashed_id, check=False)
    assert altered.returncode == 1
    assert f"tampered: event {seq}: event content does not match its hash" in altered.stderr
    assert stop(served.proc)[0] == 0


def wait_running(cluster: PgCluster, text: str) -> None:
    """Wait until a statement with the literal ``'<text>'`` runs on the upstream."""
    deadline = time.monotonic() + 15
    while cluster.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%''{text}''%' "
        "AND state = 'active' AND pid <> pg_backend_pid()"
    ) != "1":  # fmt: skip
        assert time.monotonic() < deadline, "the statement never reached the upstream"
        time.sleep(0.05)


def kill_during(served: Served, port: int, cluster: PgCluster, text: str) -> None:
    """Run ``SELECT '<text>', pg_sleep(30)`` and kill the gateway while it runs."""
    client = psql(served, port, f"SELECT '{text}', pg_sleep(30)")
    wait_running(cluster, text)
    assert served.proc is not None
    served.proc.kill()
    served.proc.communicate(timeout=10)
    client.communicate(timeout=10)
    (served.data_dir / "serve.json").unlink()  # what the killed process left: not the next's


def test_with_a_postgresql_store_a_crashed_nodes_session_is_closed_and_exported(
    pg_store_gateway: Gateway, pg_scram: PgCluster
) -> None:
    """Several nodes may share a PostgreSQL store: the node that restarts (the same data
    dir) closes what its previous run left open; the export then sends it."""
    gateway = pg_store_gateway
    served, port = gateway.start()
    add_connection(served, "rec", pg_scram)
    assert psql(served, port, "SELECT 'before'").communicate(timeout=30)[0]
    wait_exported(gateway.out, "SELECT 'before'")
    kill_during(served, port, pg_scram, "cut short")

    served, port = gateway.start()
    records = wait_exported(gateway.out, "SELECT 'cut short', pg_sleep(30)", sealed=False)
    crashed = next(r["session"] for r in records if r.get("text", "").startswith("SELECT 'cut"))
    shown = json.loads(served.cli("sessions", "list", "-o", "json").stdout)
    row = next(s for s in shown if s["id"] == crashed)
    assert row["recording"] == "recovered" and row["end_reason"].startswith("interrupted")
    assert row["ended_at"] is not None
    verified = json.loads(served.cli("audit", "verify", crashed, "-o", "json").stdout)
    assert (verified["state"], verified["signature"]) == ("recovered", "valid")
    assert stop(served.proc)[0] == 0


def test_a_session_sealed_before_a_signing_key_change_still_verifies(
    gateway: Gateway, pg_scram: PgCluster
) -> None:
    served, port = gateway.start()
    add_connection(served, "rec", pg_scram)
    assert psql(served, port, "SELECT 'under key A'").communicate(timeout=30)[0]
    first = json.loads(served.cli("sessions", "list", "-o", "json").stdout)[0]
    first_key = json.loads(served.cli("audit", "verify", first["id"], "-o", "json").stdout)
    assert first_key["valid"] and first_key["signature"] == "valid"
    assert stop(served.proc)[0] == 0

    (gateway.data_dir / "signing.key").unlink()  # a new key is made at the next start
    served, port = gateway.start()
    published = httpx.get(f"{served.api}/api/v1/keys").json()["keys"]
    kids = [k["kid"] for k in published]
    assert len(kids) == 2 and kids[1] == first_key["key_id"]  # the new key first
    assert all(k["created_at"] for k in published)
    assert psql(served, port, "SELECT 'under key B'").communicate(timeout=30)[0]
    for session in json.loads(served.cli("sessions", "list", "-o", "json").stdout):
        verified = json.loads(served.cli("audit", "verify", session["id"], "-o", "json").stdout)
        assert verified["valid"] and verified["signature"] == "valid", verified
        assert verified["key_id"] == (kids[1] if session["id"] == first["id"] else kids[0])
    assert stop(served.proc)[0] == 0


def _writer_of(pid: int) -> int:
    """The recording writer process of the gateway ``pid``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid and b"jitgate.recording.writer" in cmdline:
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError(f"gateway {pid} has no recording writer")


@pytest.fixture
def writer_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway whose PostgreSQL sessions are recorded by its writer process."""
    gw = Gateway(tmp_path / "data", tmp_path / "audit.jsonl", extra_config="  writer: process\n")
    yield gw
    gw.close()


def test_a_gateway_and_its_writer_killed_together_lose_no_statement(
    writer_gateway: Gateway, pg_scram: PgCluster
) -> None:
    """``recording.writer: process``: statements whose records were still in the spool
    ring (the writer stopped) when the gateway and its writer were both killed are applied
    by the next start, then sealed by recovery: each one with its result, in order."""
    gateway = writer_gateway
    served, port = gateway.start()
    add_connection(served, "rec", pg_scram)
    assert psql(served, port, "SELECT 'written'").communicate(timeout=30)[0]
    assert served.proc is not None
    writer = _writer_of(served.proc.pid)
    os.kill(writer, signal.SIGSTOP)  # from now on the records wait in the ring
    # answered (its session ended, waiting for the writer to close its log) …
    assert psql(served, port, "SELECT 'spooled 1'").communicate(timeout=30)[0]
    # … and running when the gateway is killed
    held = psql(served, port, "SELECT 'spooled 2', pg_sleep(30)")
    wait_running(pg_scram, "spooled 2")
    recordings = list((gateway.data_dir / "recordings").rglob("*.jsonl"))
    assert not any(b"spooled" in path.read_bytes() for path in recordings)  # only in the ring
    served.proc.kill()
    os.kill(writer, signal.SIGKILL)
    served.proc.communicate(timeout=10)
    held.communicate(timeout=10)
    (served.data_dir / "serve.json").unlink()
    assert list((gateway.data_dir / "recordings" / ".spool").glob("*.ring"))  # left behind

    served, port = gateway.start()
    records = wait_exported(gateway.out, "SELECT 'spooled 2', pg_sleep(30)", sealed=False)
    assert not list((gateway.data_dir / "recordings" / ".spool").glob("*.ring"))
    for text, answered in (
        ("SELECT 'spooled 1'", True),
        ("SELECT 'spooled 2', pg_sleep(30)", False),
    ):
        session = next(r["session"] for r in records if r.get("text") == text)
        events = [r for r in records if r.get("session") == session]
        assert [e["text"] for e in events if e["type"] == "request"] == [text]
        results = [e["status"] for e in events if e["type"] == "result"]
        assert results == (["ok"] if answered else [])  # (the second was cut short)
        assert [e["type"] for e in events[-2:]] == ["session.recovered", "seal"]
        verified = json.loads(served.cli("audit", "verify", session, "-o", "json").stdout)
        assert (verified["state"], verified["signature"]) == ("recovered", "valid")
    assert stop(served.proc)[0] == 0
