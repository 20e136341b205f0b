"""OpenSSH clients through the gateway: password log-in to the target, local port
forwarding, an exec held for approval, window changes reaching the target's terminal."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway, run_sshd
from tests.integration.ssh.test_asyncssh import _approver, echo_server
from tests.integration.ssh.test_pty import Terminal


@pytest.fixture
def key(ssh_gateway: SSHGateway) -> Path:
    name = unique("ossh")
    ssh_gateway.add_user(name)
    return ssh_gateway.add_key(name)


@pytest.fixture(scope="module")
def password_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sshd, str]]:
    password = "Pw-" + os.urandom(6).hex()
    with run_sshd(tmp_path_factory.mktemp("sshd-pw"), password=password) as server:
        yield server, password


def test_the_gateway_logs_in_to_the_target_with_a_stored_password(
    ssh_gateway: SSHGateway, password_sshd: tuple[Sshd, str], key: Path
) -> None:
    server, password = password_sshd
    conn = ssh_gateway.add_connection(server, password=password)
    result = OpenSSH(ssh_gateway).ssh(conn.name, "echo via-password; id -un", key=key)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"via-password\n{server.user}\n".encode()
    wrong = ssh_gateway.add_connection(server, password=password + "x")
    refused = OpenSSH(ssh_gateway).ssh(wrong.name, "echo should-not-run", key=key)
    assert refused.returncode == 255 and b"should-not-run" not in refused.stdout
    assert b"jitgate:" in refused.stderr
    assert password.encode() not in refused.stderr  # the client never sees the credential


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _through_tunnel(port: int) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.sendall(b"ping")
        try:
            return sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            return b""


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "denied"])
def test_local_port_forwarding_with_ssh_L(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path, allowed: bool
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    with echo_server() as target_port:
        if allowed:
            ssh_gateway.policy(
                unique("fwd"),
                f'permit (principal, action == Action::"ssh:forward", '
                f'resource == Connection::"{conn.name}") '
                f'when {{ context.text == "127.0.0.1:{target_port}" }};',
            )
        local = _free_port()
        # LogLevel INFO (the first value given wins): ssh logs a refused channel at INFO
        argv = ["ssh", "-o", "LogLevel=INFO", *client.options(key)]
        argv += ["-p", str(ssh_gateway.port), "-N"]
        argv += ["-L", f"127.0.0.1:{local}:127.0.0.1:{target_port}", f"{conn.name}@127.0.0.1"]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=client.env(None), start_new_session=True,
        )  # fmt: skip
        try:
            answer = _through_tunnel(local)
        finally:
            process.terminate()
            try:
                _, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate(timeout=10)
    if allowed:
        assert answer == b"echo:ping"
    else:
        assert answer == b""
        assert b"port forwarding to 127.0.0.1" in stderr and b"not allowed" in stderr
    row = ssh_gateway.session(conn.name)
    [event] = ssh_gateway.events(row, "ssh.forward")
    assert (event["port"], event["decision"]) == (target_port, "allow" if allowed else "deny")


def test_an_exec_held_for_approval_runs_once_an_approver_approves(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("review"),
        f'@outcome("review")\n@reason("releases need approval")\n'
        f'permit (principal, action == Action::"ssh:exec", resource == Connection::"{conn.name}")'
        f' when {{ context.functions.contains("release-now") }};',
    )
    command = "release-now() { echo released; }; release-now"
    approver = _approver(ssh_gateway, conn.name)
    result = OpenSSH(ssh_gateway).ssh(conn.name, command, key=key)
    approver.join()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"released\n"
    assert b"held for approval" in result.stderr
    row = ssh_gateway.session(conn.name)
    [channel] = ssh_gateway.events(row, "ssh.channel")
    assert (channel["decision"], channel["review"]) == ("review", "allow")


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_a_window_change_reaches_the_targets_terminal(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    argv = ["ssh", *client.options(key), "-tt", "-p", str(ssh_gateway.port)]
    argv += [f"{conn.name}@127.0.0.1", "stty size; echo ready; read _; stty size; read _"]
    env = client.env(None)
    env["TERM"] = "xterm"
    term = Terminal(argv, env, size=(24, 80))
    try:
        term.expect(rb"24 80\r\nready")
        _set_size(term.master, 43, 132)  # what a terminal emulator does when resized…
        os.kill(term.process.pid, signal.SIGWINCH)  # …and the signal its kernel sends
        time.sleep(0.5)
        term.type("\r")
        term.expect(rb"43 132")
        term.type("\r")
        assert term.close() == 0
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait(10)
    row = ssh_gateway.session(conn.name)
    sizes = [e["d"] for e in ssh_gateway.events(row, "term") if e["s"] == "r"]
    assert sizes[-1] == "132x43"
