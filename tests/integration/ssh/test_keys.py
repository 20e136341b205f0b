"""SSH keys through the REST API and the CLI, then used by OpenSSH to log in (and not after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from jitgate.api.app import create_app
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway, keygen


def jitgate(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JITGATE_SERVER": url, "JITGATE_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "jitgate.cli.main", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_keys_added_with_the_cli_log_in_until_removed(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    name = unique("carol")
    token = ssh_gateway.add_user(name)
    other = ssh_gateway.add_user(unique("dave"))
    key = keygen(tmp_path / "id_ed25519")
    with serve_app(create_app(ssh_gateway.gateway)) as url:
        connection = unique("web")
        created = jitgate(
            url, ssh_gateway.admin_token, "connections", "add", connection, "--type", "ssh",
            "--host", "127.0.0.1", "--port", str(sshd.port), "--username", sshd.user,
            "--private-key-file", str(sshd.client_key), "--option",
            f"host_key={sshd.host_key_pub}",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        conn = ssh_gateway.gateway.connections.get(connection)
        added = jitgate(url, token, "ssh-keys", "add", f"{key}.pub", "--name", "laptop",
                        "-o", "json")  # fmt: skip
        assert added.returncode == 0, added.stderr
        info = json.loads(added.stdout)
        assert (info["identity"], info["name"]) == (name, "laptop")
        assert info["fingerprint"].startswith("SHA256:")
        private = jitgate(url, token, "ssh-keys", "add", str(key))
        assert private.returncode != 0 and "private key" in private.stderr
        again = jitgate(url, token, "ssh-keys", "add", f"{key}.pub", "--name", "twice")
        assert again.returncode != 0 and "already registered" in again.stderr
        listed = jitgate(url, token, "ssh-keys", "list", "-o", "json")
        assert [k["fingerprint"] for k in json.loads(listed.stdout)] == [info["fingerprint"]]
        forbidden = httpx.get(
            f"{url}/api/v1/ssh-keys", params={"identity": name},
            headers={"Authorization": f"Bearer {other}"},
        )  # fmt: skip
        assert forbidden.status_code == 403

        result = OpenSSH(ssh_gateway).ssh(conn.name, "echo key-ok", key=key)
        assert result.stdout == b"key-ok\n", result.stderr
        row = ssh_gateway.session(conn.name)
        assert (row.identity_name, row.auth_method) == (name, "publickey")

        removed = jitgate(url, token, "ssh-keys", "rm", info["id"])
        assert removed.returncode == 0 and info["fingerprint"] in removed.stdout
    refused = OpenSSH(ssh_gateway).ssh(conn.name, "echo key-ok", key=key)
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr


def test_the_gateway_host_key_is_stable_across_restarts(
    make_ssh_gateway: Callable[..., SSHGateway], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_ssh_gateway(data).host_key_pub
    second = make_ssh_gateway(data).host_key_pub
    assert first == second
    assert (data / "ssh" / "host_ed25519_key").stat().st_mode & 0o077 == 0
