"""The PostgreSQL gateway as a user runs it: `jitgate serve`, the CLI, psql and pgbench."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jitgate.recording.log import verify_chain
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER
from tests.support.pgcluster import PgCluster
from tests.support.served import Served, start_gateway, stop, wait_ready

pytestmark = pytest.mark.postgres


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir)
    api = wait_ready(proc, data_dir)
    token = (data_dir / "admin.token").read_text().strip()
    state = json.loads((data_dir / "serve.json").read_text())
    port = int(state["listeners"]["postgres"].rsplit(":", 1)[1])
    yield Served(proc, data_dir, api, token), port
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def client_env(token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "JITGATE_"))}
    return {**env, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10", **extra}


def add_connection(served: Served, name: str, cluster: PgCluster, *tags: str) -> None:
    args = ["connections", "add", name, "--type", "postgres", "--host", "127.0.0.1",
            "--port", str(cluster.port), "--database", "app", "--username", APP_USER,
            "--password-stdin", "--tls-mode", "disable"]  # fmt: skip
    for tag in tags:
        args += ["--tag", tag]
    served.cli(*args, stdin=APP_PASSWORD + "\n")


def test_psql_through_serve(served: tuple[Served, int], pg_scram: PgCluster) -> None:
    gw, port = served
    add_connection(gw, "prod-db", pg_scram, "env=prod")
    gw.cli("users", "add", "alice")
    token = gw.cli("tokens", "create", "--user", "alice", "--name", "laptop").stdout.strip()
    dsn = f"host=127.0.0.1 port={port} dbname=prod-db user=alice sslmode=require"
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", dsn, "-c", "SELECT current_user, ssl FROM pg_stat_ssl "
         "JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()", "-c",
         "DROP TABLE IF EXISTS nothing_here"],
        capture_output=True, text=True, env=client_env(token), timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines()[0] == "app|f"
    assert "ERROR:  jitgate: DROP TABLE is not allowed on production connections" in done.stderr
    sessions = json.loads(gw.cli("sessions", "list", "-o", "json").stdout)
    session = next(s for s in sessions if s["connection"] == "prod-db")
    assert session["identity"] == "alice" and session["ended_at"] is not None
    assert "recording intact" in gw.cli("audit", "verify", session["id"]).stdout
    code, out, err = stop(gw.proc)
    assert code == 0, err
    assert APP_PASSWORD not in out + err and token not in out + err
    recordings = list((gw.data_dir / "recordings").rglob("*.jsonl"))
    assert recordings and all(APP_PASSWORD not in p.read_text() for p in recordings)


def _pgbench(port: int, token: str, *args: str) -> str:
    done = subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "admin", *args, "bench"],
        capture_output=True, text=True, env=client_env(token, PGSSLMODE="disable"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_pgbench_through_serve(served: tuple[Served, int], pg_scram: PgCluster) -> None:
    gw, port = served
    add_connection(gw, "bench", pg_scram)
    init = _pgbench(port, gw.admin_token, "-i", "-s", "1", "-q")
    assert "done in" in init
    for args in (
        ("-S", "-M", "simple"),
        ("-S", "-M", "extended"),
        ("-S", "-M", "prepared", "-c", "4", "-j", "2"),
        ("-M", "simple", "-c", "2"),  # TPC-B: BEGIN, 3 UPDATEs, SELECT, INSERT, END
        ("-M", "prepared", "-c", "2"),
    ):
        out = _pgbench(port, gw.admin_token, *args, "-T", "2")
        processed = re.search(r"number of transactions actually processed: (\d+)", out)
        assert processed and int(processed.group(1)) > 10, out
        failed = re.search(r"number of failed transactions: (\d+)", out)
        assert failed is None or failed.group(1) == "0", out
    sessions = json.loads(gw.cli("sessions", "list", "-o", "json", "--limit", "100").stdout)
    assert len([s for s in sessions if s["connection"] == "bench"]) >= 8
    code, _out, err = stop(gw.proc)
    assert code == 0, err
    # every statement of every benchmark session has its result, and none failed
    requests = 0
    for path in (gw.data_dir / "recordings").rglob("*.jsonl"):
        assert verify_chain(path, path.stem)[0]
        events = [json.loads(line) for line in path.read_text().splitlines()]
        asked = {e["request"] for e in events if e["type"] == "request"}
        answered = {e["request"]: e for e in events if e["type"] == "result"}
        assert asked == set(answered), path
        assert {r["status"] for r in answered.values()} <= {"ok"}, path
        requests += len(asked)
    assert requests > 1000


def test_gateway_killed_mid_query_keeps_the_statement(
    served: tuple[Served, int], pg_scram: PgCluster
) -> None:
    """The request event reaches the disk before the statement reaches the upstream."""
    gw, port = served
    add_connection(gw, "crashy", pg_scram)
    psql = subprocess.Popen(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "admin", "-d", "crashy",
         "-c", "SELECT 'before the crash', pg_sleep(30)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=client_env(gw.admin_token, PGSSLMODE="disable"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while pg_scram.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%before the crash%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        ) != "1":  # fmt: skip
            assert time.monotonic() < deadline, "the query never reached the upstream"
            time.sleep(0.05)
        gw.proc.kill()
        gw.proc.communicate(timeout=10)
        _out, err = psql.communicate(timeout=10)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.communicate()
    assert psql.returncode != 0 and "server closed the connection" in err
    (path,) = (gw.data_dir / "recordings").rglob("*.jsonl")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events[-1]["type"] == "request"
    assert events[-1]["text"] == "SELECT 'before the crash', pg_sleep(30)"
    assert verify_chain(path, path.stem) == (True, None, None)


def _rss_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1))


def test_large_masked_result_streams_in_bounded_memory(
    served: tuple[Served, int], pg_scram: PgCluster
) -> None:
    """A ~100 MB result with masking on passes through without the gateway holding it:
    its peak RSS grows by far less than the result, and every row arrives masked."""
    gw, port = served
    add_connection(gw, "big", pg_scram)
    gw.cli("connections", "update", "big", "--mask-profile", "pii")
    rows, pad = 200_000, 480
    before = _rss_kib(gw.proc.pid, "VmRSS")
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", f"host=127.0.0.1 port={port} dbname=big user=admin "
         "sslmode=disable", "-c",
         f"SELECT g, 'user' || g || '@example.com', repeat('x', {pad}) "
         f"FROM generate_series(1, {rows}) AS g"],
        capture_output=True, env=client_env(gw.admin_token), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == rows
    assert b"@example.com" not in done.stdout
    assert lines[-1] == f"{rows}|[REDACTED:email]|{'x' * pad}".encode()
    grown_mib = (_rss_kib(gw.proc.pid, "VmHWM") - before) / 1024
    result_mib = len(done.stdout) / 2**20
    assert result_mib > 90
    assert grown_mib < 40, f"peak RSS grew by {grown_mib:.0f} MiB for a {result_mib:.0f} MiB result"
