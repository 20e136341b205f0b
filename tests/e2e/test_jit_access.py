"""Just-in-time access end to end: `jitgate serve`, a real PostgreSQL, psycopg, the CLI.

* a DELETE without WHERE on a prod connection is held, approved from the CLI by a second
  identity, then executes once; a second run is held again;
* denial and timeout give SQLSTATE 42501 and leave the session usable;
* an agent that needs a grant connects only while its grant is active, and its live
  session is ended with "jitgate: grant expired" when the grant ends (the end time is moved
  forward in the store instead of waiting minutes);
* a task-scoped grant ends, with its session, when the task is completed.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import update

from jitgate.store.db import Store
from jitgate.store.models import GrantRow, utcnow
from tests.support.pgcluster import PgCluster, pg_bindir
from tests.support.served import JITGATE, start_gateway, stop, wait_ready

PUBLIC_URL = "https://jitgate.example.test"  # approval links point here (never fetched)

GRANT_POLICY = """
@id("prod-needs-grant-for-agents")
@reason("agents need a just-in-time grant for production")
forbid (principal, action == Action::"connect", resource)
when { context.is_agent && resource.tags has env && resource.tags.env == "prod" }
unless { context.has_grant };
"""


@dataclass
class Env:
    proc: subprocess.Popen[str]
    data_dir: Path
    api: str
    pg_port: int
    tokens: dict[str, str]
    cluster: PgCluster

    def cli(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "JITGATE_SERVER": self.api,
            "JITGATE_TOKEN": self.tokens[who],
            "XDG_CONFIG_HOME": str(self.data_dir.parent / "xdg"),
        }
        result = subprocess.run(
            [*JITGATE, *args], capture_output=True, text=True, env=env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"jitgate {' '.join(args)}: {result.stderr}")
        return result

    def http(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.api + path,
            timeout=30,
            **kwargs,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )

    def connect(self, who: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.pg_port,
            dbname="prod-db",
            user=who,
            password=self.tokens[who],
            sslmode="disable",
            autocommit=True,
            **kwargs,
        )

    def pending(self, requester: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = json.loads(
                self.cli("bob", "requests", "list", "--status", "pending", "-o", "json").stdout
            )
            mine = [r for r in rows if r["requester"] == requester]
            if mine:
                return mine[0]
            time.sleep(0.1)
        raise AssertionError(f"no pending request from {requester}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    cluster = PgCluster(auth="scram-sha-256").start()
    cluster.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
    data_dir = tmp_path / "data"
    config = tmp_path / "jitgate.yaml"
    config.write_text(
        f"api:\n  port: 0\n  public_url: {PUBLIC_URL}\n"
        "listeners:\n  postgres:\n    port: 0\n    allow_cleartext_loopback: true\n"
        "  ssh:\n    port: 0\n"
        "approvals:\n  hold_timeout_seconds: 20\n  poll_interval_seconds: 0.5\n"
    )
    proc = start_gateway(data_dir, config=config)
    try:
        api = wait_ready(proc, data_dir)
        pg_port = int(
            json.loads((data_dir / "serve.json").read_text())["listeners"]["postgres"].rsplit(
                ":", 1
            )[1]
        )
        admin = (data_dir / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {admin}"}
        httpx.post(
            api + "/api/v1/connections",
            headers=headers,
            json={
                "name": "prod-db",
                "type": "postgres",
                "host": "127.0.0.1",
                "port": cluster.port,
                "database": "postgres",
                "username": cluster.superuser,
                "password": cluster.password,
                "tls_mode": "disable",
                "tags": {"env": "prod"},
            },
        ).raise_for_status()
        tokens = {"admin": admin}
        for name, groups in (("alice", ["dbas"]), ("bob", ["approvers"])):
            httpx.post(
                api + "/api/v1/users", headers=headers, json={"name": name, "groups": groups}
            ).raise_for_status()
            tokens[name] = httpx.post(
                api + "/api/v1/tokens", headers=headers, json={"user": name, "name": "t"}
            ).json()["token"]
        tokens["ci-bot"] = httpx.post(
            api + "/api/v1/tokens",
            headers=headers,
            json={"agent": "ci-bot", "name": "t", "create_agent": True},
        ).json()["token"]
        env = Env(proc, data_dir, api, pg_port, tokens, cluster)
        yield env
        proc = env.proc  # a test may have restarted the gateway
    finally:
        if proc.poll() is None:
            stop(proc)
        cluster.stop()


def _run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def test_held_delete_approved_from_the_cli_runs_once(env: Env) -> None:
    notices: list[str] = []
    with env.connect("alice") as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t").rowcount)
        request = env.pending("alice")
        assert request["kind"] == "statement" and "DELETE FROM t" in request["reason"] + (
            env.cli("bob", "requests", "show", request["id"], "-o", "json").stdout
        )
        assert thread.is_alive()  # held, not run
        assert env.cluster.psql("SELECT count(*) FROM t") == "10"
        denied_self = env.cli("alice", "requests", "approve", request["id"], check=False)
        assert denied_self.returncode == 1 and "own request" in denied_self.stderr
        approved = env.cli("bob", "requests", "approve", request["id"], "--comment", "ok")
        assert "approved" in approved.stdout
        thread.join(30)
        assert box.get("result") == 10, box
        assert any(request["id"] in n for n in notices)
        [held] = [n for n in notices if "held for approval" in n]
        assert f"POST {PUBLIC_URL}/api/v1/requests/{request['id']}/approve" in held
        assert env.cluster.psql("SELECT count(*) FROM t") == "0"
        # The approval was for one execution: the same statement is held again.
        env.cluster.psql("INSERT INTO t VALUES (1)")
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t"))
        second = env.pending("alice")
        assert second["id"] != request["id"]
        env.cli("bob", "requests", "deny", second["id"], "--comment", "not twice")
        thread.join(30)
        error = box.get("error")
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), box
        assert "not twice" in str(error)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)  # still usable


def test_hold_timeout_gives_42501_and_the_session_stays_usable(env: Env) -> None:
    with env.connect("alice") as conn:
        conn.execute("BEGIN")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="nobody approved"):
            conn.execute("UPDATE t SET id = 0")
        assert 15 < time.monotonic() - started < 60
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)


def _grant_for_agent(env: Env, **body: Any) -> dict[str, Any]:
    created = env.http(
        "ci-bot",
        "POST",
        "/api/v1/requests",
        json={"connection": "prod-db", "reason": "nightly migration check", **body},
    )
    assert created.status_code == 201, created.text
    approved = env.http("bob", "POST", f"/api/v1/requests/{created.json()['id']}/approve", json={})
    assert approved.json()["status"] == "approved"
    return approved.json()


def test_agent_grant_ends_its_live_session_on_time(env: Env) -> None:
    env.cli("admin", "policy", "add", "agents", "--file", _write(env, GRANT_POLICY))
    with pytest.raises(psycopg.OperationalError, match="just-in-time grant"):
        env.connect("ci-bot")
    approved = _grant_for_agent(env, duration_seconds=120)
    conn = env.connect("ci-bot")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    # Bring the end of the 2-minute grant forward to "in one second" instead of waiting.
    ends_at = utcnow() + timedelta(seconds=1)
    store = Store.from_url(f"sqlite:///{env.data_dir / 'jitgate.db'}")
    with store.session() as session:
        session.execute(
            update(GrantRow).where(GrantRow.id == approved["grant_id"]).values(ends_at=ends_at)
        )
    store.dispose()
    deadline = time.monotonic() + 10
    ended_after = None
    while time.monotonic() < deadline:
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            assert "grant expired" in str(exc)
            ended_after = (utcnow() - ends_at).total_seconds()
            break
        time.sleep(0.1)
    conn.close()
    assert ended_after is not None and ended_after < 3, ended_after
    with pytest.raises(psycopg.OperationalError, match="just-in-time grant"):
        env.connect("ci-bot")


def test_task_scoped_grant_ends_when_the_task_completes(env: Env) -> None:
    env.cli("admin", "policy", "add", "agents", "--file", _write(env, GRANT_POLICY))
    _grant_for_agent(env, task_id="task-42")
    more = env.http(
        "ci-bot",
        "POST",
        "/api/v1/requests",
        json={"connection": "prod-db", "reason": "a second look", "task_id": "task-42"},
    ).json()
    conn = env.connect("ci-bot")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    not_yours = env.cli("bob", "tasks", "complete", "task-42", check=False)
    assert not_yours.returncode == 1 and "owner or an admin" in not_yours.stderr
    done = env.cli("ci-bot", "tasks", "complete", "task-42")
    assert "1 grant(s) ended, 1 pending request(s) cancelled" in done.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            assert "jitgate: grant ended: task task-42 was completed" in str(exc)
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the session outlived its task")
    conn.close()
    shown = env.http("bob", "GET", f"/api/v1/requests/{more['id']}").json()
    assert shown["status"] == "cancelled" and "task-42 completed" in shown["decision_reason"]
    again = env.cli("admin", "tasks", "complete", "task-42", check=False)
    assert again.returncode == 1 and "task 'task-42' was already completed" in again.stderr
    assert "by ci-bot" in again.stderr
    with pytest.raises(psycopg.OperationalError, match="just-in-time grant"):
        env.connect("ci-bot")


def _write(env: Env, text: str) -> str:
    path = env.data_dir.parent / "policy.cedar"
    path.write_text(text)
    return str(path)


def test_gateway_restart_while_a_statement_is_held(env: Env) -> None:
    """The held statement fails cleanly, its request is withdrawn, and after the restart
    nothing of it runs; the same statement sent again is held again, as a new request."""
    with env.connect("alice") as conn:
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t"))
        request = env.pending("alice")
        code, _out, _err = stop(env.proc)
        assert code == 0
        thread.join(30)
    error = box.get("error")
    assert isinstance(error, psycopg.OperationalError), box
    assert error.sqlstate in ("57P01", None) and "shutting down" in str(error), error
    assert env.cluster.psql("SELECT count(*) FROM t") == "10"

    env.proc = start_gateway(env.data_dir, config=env.data_dir.parent / "jitgate.yaml")
    env.api = wait_ready(env.proc, env.data_dir)
    env.pg_port = int(
        json.loads((env.data_dir / "serve.json").read_text())["listeners"]["postgres"].rsplit(
            ":", 1
        )[1]
    )
    shown = json.loads(env.cli("bob", "requests", "show", request["id"], "-o", "json").stdout)
    assert shown["status"] == "cancelled"
    late = env.cli("bob", "requests", "approve", request["id"], check=False)
    assert late.returncode == 1 and "already cancelled" in late.stderr
    assert env.cluster.psql("SELECT count(*) FROM t") == "10"
    with env.connect("alice") as conn:
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t"))
        again = env.pending("alice")
        assert again["id"] != request["id"]
        env.cli("bob", "requests", "deny", again["id"], "--comment", "no")
        thread.join(30)
    assert isinstance(box.get("error"), psycopg.errors.InsufficientPrivilege), box
    assert env.cluster.psql("SELECT count(*) FROM t") == "10"


def test_gateway_killed_while_a_statement_is_held(env: Env) -> None:
    """SIGKILL: the session cannot withdraw its request; the restarted gateway does, when
    it closes the interrupted session, so nobody approves a statement that can no longer
    run, and nothing of it ever runs."""
    with env.connect("alice") as conn:
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t"))
        request = env.pending("alice")
        env.proc.kill()
        env.proc.wait(10)
        thread.join(30)
    assert isinstance(box.get("error"), psycopg.OperationalError), box
    for pipe in (env.proc.stdout, env.proc.stderr):
        if pipe is not None:
            pipe.close()
    (env.data_dir / "serve.json").unlink()  # the killed run's: wait for the new one's
    env.proc = start_gateway(env.data_dir, config=env.data_dir.parent / "jitgate.yaml")
    env.api = wait_ready(env.proc, env.data_dir)
    deadline = time.monotonic() + 20
    while True:  # the restarted gateway closes the interrupted session and withdraws
        shown = json.loads(env.cli("bob", "requests", "show", request["id"], "-o", "json").stdout)
        if shown["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown["status"] == "cancelled" and shown["decided_by"] == "jitgate", shown
    late = env.cli("bob", "requests", "approve", request["id"], check=False)
    assert late.returncode == 1 and "already cancelled" in late.stderr
    waited = datetime.fromisoformat(shown["expires_at"]) - datetime.fromisoformat(
        shown["created_at"]
    )
    assert waited <= timedelta(seconds=30)  # the hold (20 s) and a grace, not the rule's hour
    assert env.cluster.psql("SELECT count(*) FROM t") == "10"


def test_a_grant_for_one_session_admits_one_session(env: Env) -> None:
    env.cli("admin", "policy", "add", "agents", "--file", _write(env, GRANT_POLICY))
    approved = _grant_for_agent(env, duration_seconds=120, max_uses=1)
    with env.connect("ci-bot") as first:
        assert first.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="just-in-time grant"):
            env.connect("ci-bot")  # the one use is taken
        time.sleep(1.5)  # housekeeping runs; a used-up grant still covers its session
        assert first.execute("SELECT 2").fetchone() == (2,)
    grant = env.http("admin", "GET", f"/api/v1/grants/{approved['grant_id']}").json()
    assert grant["uses"] == 1 and grant["max_uses"] == 1 and grant["revoked_at"] is None


def test_the_approver_tools_of_the_cli(env: Env) -> None:
    """What an operator types: validate and add a policy, explain a decision, set an
    approval rule, request scoped access, list and revoke grants, break glass."""
    bad = env.cli(
        "admin", "policy", "validate", "--file", _write(env, "permit(principal,"), check=False
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error:")
    assert len(bad.stderr.strip().splitlines()) <= 3  # a clear message, no traceback
    typo = env.cli(
        "admin",
        "policy",
        "add",
        "typo",
        "--file",
        _write(env, "forbid (principal, action, resource) when { context.riks >= 70 };"),
        check=False,
    )
    assert typo.returncode == 1 and "attribute `riks` in context not found" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) <= 3
    env.cli("admin", "policy", "validate", "--file", _write(env, GRANT_POLICY))
    env.cli("admin", "policy", "add", "agents", "--file", _write(env, GRANT_POLICY))
    listed = json.loads(env.cli("admin", "policy", "list", "-o", "json").stdout)
    assert {"default", "agents"} <= {p["name"] for p in listed}
    explained = env.cli(
        "admin",
        "policy",
        "test",
        "--user",
        "ci-bot",
        "--connection",
        "prod-db",
        "--action",
        "connect",
    ).stdout
    assert explained.startswith("DENY: connect — agents need a just-in-time grant")
    assert "matched forbid  prod-needs-grant-for-agents (agents)" in explained
    assert "risk:" in explained
    drop = env.cli(
        "admin",
        "policy",
        "test",
        "--user",
        "alice",
        "--connection",
        "prod-db",
        "--sql",
        "DROP TABLE t",
    ).stdout
    assert drop.startswith("DENY") and "deny-drop-truncate-on-prod" in drop

    rule = env.data_dir.parent / "rule.yaml"
    rule.write_text(
        "connections: [prod-db]\nsteps:\n  - {groups: [approvers], min_approvals: 1}\n"
        "max_duration_seconds: 7200\n"
    )
    env.cli("admin", "rules", "put", "prod-rule", "--file", str(rule))
    rules = json.loads(env.cli("admin", "rules", "list", "-o", "json").stdout)
    assert any(r["name"] == "prod-rule" and r["max_duration_seconds"] == 7200 for r in rules)
    too_long = env.cli(
        "ci-bot",
        "requests",
        "create",
        "--connection",
        "prod-db",
        "--reason",
        "r",
        "--duration",
        "3h",
        check=False,
    )
    assert too_long.returncode == 1 and "maximum of 7200" in too_long.stderr

    created = json.loads(
        env.cli(
            "ci-bot",
            "requests",
            "create",
            "--connection",
            "prod-db",
            "--reason",
            "migrate",
            "--duration",
            "30m",
            "--scope",
            "sql:ddl",
            "--scope",
            "sql:write",
            "-o",
            "json",
        ).stdout
    )
    assert created["scope"] == ["sql:ddl", "sql:write"] and created["rule"] == "prod-rule"
    env.cli("bob", "requests", "approve", created["id"], "--comment", "ok")
    grants = json.loads(env.cli("bob", "grants", "list", "-o", "json").stdout)
    [grant] = [g for g in grants if g["request_id"] == created["id"]]
    assert grant["scope"] == ["sql:ddl", "sql:write"] and grant["identity"] == "ci-bot"
    with env.connect("ci-bot") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    env.cli("bob", "grants", "revoke", grant["id"], "--reason", "done early")
    assert not [
        g
        for g in json.loads(env.cli("bob", "grants", "list", "-o", "json").stdout)
        if g["id"] == grant["id"]
    ]
    with pytest.raises(psycopg.OperationalError, match="just-in-time grant"):
        env.connect("ci-bot")

    glass = env.cli(
        "ci-bot",
        "break-glass",
        "--connection",
        "prod-db",
        "--reason",
        "primary down, on-call unreachable",
        "--duration",
        "15m",
    )
    assert glass.returncode == 0
    with env.connect("ci-bot") as conn:  # break glass: in at once, flagged in the audit log
        assert conn.execute("SELECT 2").fetchone() == (2,)
    audit = env.http(
        "admin", "GET", "/api/v1/audit", params={"action": "grant:break_glass"}
    ).json()["items"]
    assert audit and audit[0]["details"]["flagged"] is True


def test_a_matching_forbid_refuses_at_once_even_when_review_also_matches(env: Env) -> None:
    """Deny first: a forbid that matches wins over the default pack's review of an
    unbounded DELETE, so nothing is held; templates are refused when added."""
    env.cli(
        "admin",
        "policy",
        "add",
        "keep-t",
        "--file",
        _write(
            env,
            """
        @id("keep-t") @reason("rows of t are kept")
        forbid (principal, action == Action::"sql:delete", resource)
        when { context.tables_written.contains("t") };
    """,
        ),
    )
    with env.connect("alice") as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="rows of t are kept"):
            conn.execute("DELETE FROM t")
        assert time.monotonic() - started < 5  # refused, not held for approval
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)
    pending = json.loads(
        env.cli("bob", "requests", "list", "--status", "pending", "-o", "json").stdout
    )
    assert pending == []
    template = env.cli(
        "admin",
        "policy",
        "add",
        "tmpl",
        "--file",
        _write(env, "permit (principal == ?principal, action, resource);"),
        check=False,
    )
    assert template.returncode == 1
    assert "templates" in template.stderr and "not supported" in template.stderr
    assert "tmpl" not in {
        p["name"] for p in json.loads(env.cli("admin", "policy", "list", "-o", "json").stdout)
    }


def _psql(env: Env, who: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(pg_bindir() / "psql"),
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            f"host=127.0.0.1 port={env.pg_port} dbname=prod-db user={who} sslmode=disable",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGPASSWORD": env.tokens[who], "PGCONNECT_TIMEOUT": "10"},
    )


def test_an_agent_task_from_request_to_completion(env: Env) -> None:
    """The whole life of an agent task: the agent asks for access for its task, an approver
    approves, the agent's psql and psycopg statements run, the agent completes the task,
    and its next statement is refused with a message that says why."""
    env.cli("admin", "policy", "add", "agents", "--file", _write(env, GRANT_POLICY))
    refused = _psql(env, "ci-bot", "SELECT count(*) FROM t")
    assert refused.returncode != 0 and "just-in-time grant" in refused.stderr
    created = json.loads(
        env.cli(
            "ci-bot",
            "requests",
            "create",
            "--connection",
            "prod-db",
            "--reason",
            "migrate t for JOB-7",
            "--duration",
            "30m",
            "--task-id",
            "job-7",
            "-o",
            "json",
        ).stdout
    )
    assert created["status"] == "pending" and created["task_id"] == "job-7"
    env.cli("bob", "requests", "approve", created["id"], "--comment", "go")

    ran = _psql(env, "ci-bot", "UPDATE t SET id = id + 100 WHERE id <= 5")
    assert ran.returncode == 0, ran.stderr
    assert "UPDATE 5" in ran.stdout
    conn = env.connect("ci-bot")
    assert conn.execute("SELECT count(*) FROM t WHERE id > 100").fetchone() == (5,)
    assert conn.execute("DELETE FROM t WHERE id > 100").rowcount == 5

    done = env.cli("ci-bot", "tasks", "complete", "job-7")
    assert "1 grant(s) ended" in done.stdout
    deadline = time.monotonic() + 10
    message = ""
    while time.monotonic() < deadline and not message:
        try:
            conn.execute("SELECT count(*) FROM t")
            time.sleep(0.1)
        except psycopg.OperationalError as exc:
            message = str(exc)
    conn.close()
    assert "jitgate: grant ended: task job-7 was completed" in message, message
    after = _psql(env, "ci-bot", "SELECT count(*) FROM t")
    assert after.returncode != 0 and "just-in-time grant" in after.stderr
    assert env.cluster.psql("SELECT count(*) FROM t") == "5"
    audit = env.http("admin", "GET", "/api/v1/audit", params={"action": "task:complete"}).json()
    assert [(e["target_name"], e["actor"]) for e in audit["items"]] == [("job-7", "ci-bot")]
