"""`jitgate serve` as a real process, driven by the real `jitgate` CLI and raw HTTP."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jitgate.config import load_settings
from jitgate.server.gateway import Gateway
from tests.support.served import JITGATE, Served, start_gateway, stop, wait_ready

SECRET = "Pl4nted-CLI-S3cret-77"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir)
    api = wait_ready(proc, data_dir)
    token = (data_dir / "admin.token").read_text().strip()
    yield Served(proc, data_dir, api, token)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_first_start_creates_private_state(served: Served) -> None:
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(served.data_dir) == 0o700
    for name in ("admin.token", "master.key", "signing.key", "tls/gateway.key"):
        assert mode(served.data_dir / name) == 0o600, name
    assert (served.data_dir / "jitgate.db").exists()
    response = httpx.get(
        served.api + "/api/v1/whoami", headers={"Authorization": f"Bearer {served.admin_token}"}
    )
    assert response.status_code == 200
    assert response.json()["identity"]["name"] == "admin"
    code, out, err = stop(served.proc)
    assert code == 0, err
    assert "serving" in out and "admin token written to" in out
    assert served.admin_token not in out + err


def test_cli_round_trip_and_secrets_never_shown(served: Served) -> None:
    added = served.cli(
        "connections",
        "add",
        "prod-db",
        "--type",
        "postgres",
        "--host",
        "127.0.0.1",
        "--port",
        "5432",
        "--database",
        "app",
        "--username",
        "app",
        "--password-stdin",
        "--tag",
        "env=prod",
        stdin=SECRET + "\n",
    )
    assert "prod-db" in added.stdout
    listed = json.loads(served.cli("connections", "list", "--output", "json").stdout)
    assert [c["name"] for c in listed] == ["prod-db"]
    assert listed[0]["tags"] == {"env": "prod"} and listed[0]["credential"]["kind"] == "password"
    shown = served.cli("connections", "show", "prod-db")
    assert "prod-db" in shown.stdout and "password" in shown.stdout

    served.cli("users", "add", "bob", "--group", "approvers")
    bob_token = served.cli("tokens", "create", "--user", "bob", "--name", "laptop").stdout.strip()
    assert bob_token.startswith("jgt_")
    who = json.loads(served.cli("whoami", "-o", "json", token=bob_token).stdout)
    assert who["identity"]["name"] == "bob" and "approver" in who["identity"]["roles"]
    agent_token = served.cli("tokens", "create", "--agent", "ci-bot", "--name", "ci").stdout
    agent_who = json.loads(served.cli("whoami", "-o", "json", token=agent_token.strip()).stdout)
    assert agent_who["identity"]["kind"] == "agent"

    tokens = json.loads(served.cli("tokens", "list", "--all", "-o", "json").stdout)
    assert {t["identity"] for t in tokens} == {"admin", "bob", "ci-bot"}
    bob_id = next(t["id"] for t in tokens if t["identity"] == "bob")
    served.cli("tokens", "revoke", bob_id)
    denied = served.cli("whoami", token=bob_token, check=False)
    assert denied.returncode == 1 and denied.stderr.strip() == "error: token revoked"

    users = json.loads(served.cli("users", "list", "-o", "json").stdout)
    assert {u["name"] for u in users} == {"admin", "bob", "ci-bot"}
    audit = json.loads(served.cli("audit", "list", "-o", "json").stdout)
    assert "connection:create" in [e["action"] for e in audit]

    code, out, err = stop(served.proc)
    assert code == 0
    everything = out + err + json.dumps(listed) + json.dumps(audit)
    assert SECRET not in everything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["connections", "show", "nope"], "error: no connection named 'nope'"),
        (
            ["connections", "add", "x", "--type", "postgres", "--host", "bad host"],
            "error: invalid host",
        ),
        (["users", "add", "robert');DROP TABLE identities;--"], "error: invalid name"),
        (["tokens", "create", "--expires-in", "soon"], "error: invalid duration"),
    ],
)
def test_cli_errors_are_one_line(served: Served, args: list[str], message: str) -> None:
    result = served.cli(*args, check=False)
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_without_server_or_token(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "JITGATE_SERVER": "http://127.0.0.1:9"}
    env.pop("JITGATE_TOKEN", None)
    result = subprocess.run(
        [*JITGATE, "whoami"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 1 and result.stderr.startswith("error: not logged in")
    env["JITGATE_TOKEN"] = "jgt_x"
    result = subprocess.run(
        [*JITGATE, "whoami"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 1 and "cannot reach the jitgate server" in result.stderr


def test_local_login_saves_credentials(served: Served) -> None:
    served.cli("users", "add", "erin", "--password-stdin", stdin="erin-password-123\n")
    env_home = served.data_dir.parent / "xdg"
    result = served.cli(
        "login", "--server", served.api, "--username", "erin", token="", stdin="erin-password-123\n"
    )
    assert "logged in as erin" in result.stdout
    saved = env_home / "jitgate" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    env = {**os.environ, "XDG_CONFIG_HOME": str(env_home)}
    env.pop("JITGATE_TOKEN", None)
    env.pop("JITGATE_SERVER", None)
    who = subprocess.run(
        [*JITGATE, "whoami", "-o", "json"], capture_output=True, text=True, env=env, timeout=30
    )
    assert json.loads(who.stdout)["identity"]["name"] == "erin"


def test_invalid_config_stops_startup_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("api:\n  port: not-a-port\n")
    proc = start_gateway(tmp_path / "data", config)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.startswith("error: invalid configuration") and "api.port" in err


def test_restart_keeps_state_and_key_rotation(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir)
    api = wait_ready(proc, data_dir)
    token = (data_dir / "admin.token").read_text().strip()
    served = Served(proc, data_dir, api, token)
    served.cli(
        "connections",
        "add",
        "db",
        "--type",
        "postgres",
        "--host",
        "h",
        "--password-stdin",
        stdin=SECRET,
    )
    old_key = (data_dir / "master.key").read_text()
    rotate = [*JITGATE, "vault", "rotate-key", "--data-dir", str(data_dir)]
    while_running = subprocess.run(rotate, capture_output=True, text=True, timeout=60)
    assert while_running.returncode != 0 and "is running" in while_running.stderr
    assert (data_dir / "master.key").read_text() == old_key
    assert stop(proc)[0] == 0

    rotated = subprocess.run(rotate, capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 credential(s)" in rotated.stdout
    assert (data_dir / "master.key").read_text() != old_key

    proc = start_gateway(data_dir)
    served = Served(proc, data_dir, wait_ready(proc, data_dir), token)
    out = served.cli("connections", "list", "-o", "json").stdout
    assert json.loads(out)[0]["name"] == "db"
    assert (data_dir / "admin.token").read_text().strip() == token
    assert stop(proc)[0] == 0
    gateway = Gateway.open(load_settings(env={}, overrides={"data_dir": str(data_dir)}))
    try:
        _info, credential = gateway.connections.resolve("db")
    finally:
        gateway.close()
    assert credential is not None and credential.secret == SECRET


@pytest.mark.parametrize(
    "args", [["nosuchcommand"], ["policy", "nosuch"], ["tokens", "create", "--bogus-flag"]]
)
def test_cli_usage_errors_print_usage_not_a_traceback(args: list[str]) -> None:
    result = subprocess.run([*JITGATE, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Usage: jitgate" in result.stderr and "Error:" in result.stderr
