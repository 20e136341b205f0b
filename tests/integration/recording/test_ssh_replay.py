"""SSH sessions recorded through the gateway to a real sshd, as ``sessions show``,
``sessions replay`` and search find them: exec commands and their exit status, SFTP file
operations, denials, and a terminal's output replayed as the client saw it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jitgate.api.app import create_app
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway, ssh_gateway, sshd
from tests.integration.recording.conftest import JITGATE, Console

__all__ = ["ssh_gateway", "sshd"]


@pytest.fixture(scope="module")
def ssh_console(ssh_gateway: SSHGateway) -> Iterator[Console]:
    with (
        serve_app(create_app(ssh_gateway.gateway)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield Console(url, http, ssh_gateway.admin_token)


@pytest.fixture
def user(ssh_gateway: SSHGateway) -> tuple[str, Path]:
    name = unique("replay-ann")
    ssh_gateway.add_user(name)
    return name, ssh_gateway.add_key(name)


def _found(console: Console, *args: str) -> list[str]:
    listed = console.cli("sessions", "list", *args, "-o", "json", check=True).stdout
    return [s["id"] for s in json.loads(listed)]


def _replay_bytes(console: Console, session_id: str) -> bytes:
    """``sessions replay`` output exactly as written (text mode would turn \\r\\n into \\n)."""
    env = {**os.environ, "JITGATE_SERVER": console.url, "JITGATE_TOKEN": console.token}
    env.pop("JITGATE_CONFIG", None)
    done = subprocess.run(
        [*JITGATE, "sessions", "replay", session_id, "--speed", "1000"],
        capture_output=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    return done.stdout


def test_exec_sessions_show_replay_and_are_found(
    ssh_gateway: SSHGateway, sshd: Sshd, ssh_console: Console, user: tuple[str, Path]
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd).name
    client = OpenSSH(ssh_gateway)
    needle = unique("needle-exec")
    ran = client.ssh(conn, f"echo {needle} >/dev/null; exit 3", key=key)
    assert ran.returncode == 3, ran.stderr
    row = ssh_gateway.session(conn)

    show = ssh_console.cli("sessions", "show", row.id, check=True).stdout
    assert f"ALLOW  exec: echo {needle} >/dev/null; exit 3" in show
    assert "→ exec exit status 3" in show and "signed" in show
    replayed = ssh_console.cli("sessions", "replay", row.id, "--speed", "1000", check=True)
    assert f"exec: echo {needle}" in replayed.stdout and "exit status 3" in replayed.stdout
    events = json.loads(
        ssh_console.cli("sessions", "replay", row.id, "-o", "json", check=True).stdout
    )
    kinds = [e["type"] for e in events]
    assert kinds.index("ssh.channel") < kinds.index("ssh.exit")
    channel = events[kinds.index("ssh.channel")]
    assert channel["command"] == f"echo {needle} >/dev/null; exit 3"
    # The command is found (its output went to /dev/null: only the command names it).
    assert _found(ssh_console, "--connection", conn, "--search", needle) == [row.id]
    matched = ssh_console.get(f"/api/v1/sessions/{row.id}/events", q=needle).json()["items"]
    assert [e["type"] for e in matched] == ["ssh.channel"]

    denied = client.ssh(conn, "true && rm -rf --no-preserve-root /", key=key)
    assert denied.returncode == 1
    refused = ssh_gateway.session(conn)
    assert (
        "DENY   exec: true && rm -rf --no-preserve-root /"
        in ssh_console.cli("sessions", "show", refused.id, check=True).stdout
    )
    # SSH sessions count no requests: the decision filter reads their recordings.
    assert _found(ssh_console, "--connection", conn, "--decision", "deny") == [refused.id]


def test_sftp_session_shows_its_file_operations_and_paths_are_found(
    ssh_gateway: SSHGateway,
    sshd: Sshd,
    ssh_console: Console,
    user: tuple[str, Path],
    tmp_path: Path,
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd).name
    local = tmp_path / "local.txt"
    local.write_text("hello sftp")
    remote = tmp_path / f"{unique('sftp-needle')}.txt"
    done = OpenSSH(ssh_gateway).sftp(
        conn, f"put {local} {remote}\nrename {remote} {remote}.moved\n", key=key
    )
    assert done.returncode == 0, done.stderr
    row = ssh_gateway.session(conn)

    show = ssh_console.cli("sessions", "show", row.id, check=True).stdout
    assert "ALLOW  sftp session" in show
    assert f"ALLOW  sftp open {remote} (write)" in show
    assert f"sftp close {remote}: 10 bytes written, 0 bytes read" in show
    assert f"ALLOW  sftp posix-rename {remote} → {remote}.moved (write)" in show
    events = json.loads(
        ssh_console.cli("sessions", "replay", row.id, "-o", "json", check=True).stdout
    )
    paths = [e.get("path") for e in events if e["type"] == "sftp"]
    assert str(remote) in paths
    assert _found(ssh_console, "--connection", conn, "--search", remote.name) == [row.id]
    moved = ssh_console.get(f"/api/v1/sessions/{row.id}/events", q=f"{remote.name}.moved")
    ops = {e["op"] for e in moved.json()["items"]}
    assert ops == {"posix-rename"}  # the rename (its decision and its answer), nothing else


def test_terminal_output_of_a_real_session_replays_as_the_client_saw_it(
    ssh_gateway: SSHGateway, sshd: Sshd, ssh_console: Console, user: tuple[str, Path]
) -> None:
    _, key = user
    conn = ssh_gateway.add_connection(sshd).name
    ran = OpenSSH(ssh_gateway).ssh(
        conn, "printf 'first line\\n'; sleep 0.3; printf 'second \\033[1mbold\\033[0m\\n'",
        key=key, extra=("-tt",),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    seen = ran.stdout.decode()
    assert "first line\r\n" in seen and "\x1b[1mbold" in seen  # through a pseudo-terminal
    row = ssh_gateway.session(conn)

    assert _replay_bytes(ssh_console, row.id) == ran.stdout
    cast = ssh_console.cli("sessions", "replay", row.id, "-o", "asciicast", check=True).stdout
    header, *frames = (json.loads(line) for line in cast.splitlines())
    assert header["version"] == 2
    assert "".join(f[2] for f in frames if f[1] == "o") == seen
    times = [f[0] for f in frames if f[1] == "o"]
    assert times == sorted(times) and times[-1] - times[0] >= 0.25  # the pause is kept
    show = ssh_console.cli("sessions", "show", row.id, check=True).stdout
    assert "ALLOW  exec: printf 'first line\\n'" in show and "exit status 0" in show
