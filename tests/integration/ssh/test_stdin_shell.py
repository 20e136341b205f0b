"""A shell without a terminal reading its commands from stdin (OpenSSH ``ssh HOST < script``,
``ssh -T``, ``ssh HOST bash -s``): each command is decided like a typed line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway


@pytest.fixture
def key(ssh_gateway: SSHGateway) -> Path:
    name = unique("script")
    ssh_gateway.add_user(name)
    return ssh_gateway.add_key(name)


@pytest.mark.parametrize(
    ("command", "extra"),
    [(None, ()), (None, ("-T",)), ("bash -s", ()), ("sh", ())],
    ids=["shell", "ssh-T", "exec-bash-s", "exec-sh"],
)
def test_commands_piped_into_a_shell_are_decided_one_by_one(
    ssh_gateway: SSHGateway,
    sshd: Sshd,
    key: Path,
    tmp_path: Path,
    command: str | None,
    extra: tuple[str, ...],
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    marker = tmp_path / "marker"
    script = (
        "echo one\n"
        f"touch {marker}; false && reboot\n"  # the marker shows if the line got through
        "for i in 1 2; do\n  echo loop-$i\ndone\n"
        "cat <<EOF\nreboot is only text here\nEOF\n"
        f"if true; then\n  touch {marker}; false && shutdown -h now\nfi\n"
        "echo two"  # the last line has no newline
    )
    result = OpenSSH(ssh_gateway).ssh(
        conn.name, command, key=key, extra=extra, input=script.encode()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\nloop-1\nloop-2\nreboot is only text here\ntwo\n"
    assert result.stderr.count(b"was denied") == 2, result.stderr
    assert b"reboot stops the server" in result.stderr
    assert not marker.exists()
    row = ssh_gateway.session(conn.name)
    lines = [(e["text"], e["decision"], e["source"]) for e in ssh_gateway.events(row, "ssh.line")]
    assert lines == [
        ("echo one", "allow", "stdin"),
        (f"touch {marker}; false && reboot", "deny", "stdin"),
        ("for i in 1 2; do\n  echo loop-$i\ndone", "allow", "stdin"),
        ("cat <<EOF", "allow", "stdin"),
        (f"if true; then\n  touch {marker}; false && shutdown -h now\nfi", "deny", "stdin"),
        ("echo two", "allow", "stdin"),
    ]
    ssh_gateway.verify(row)


def test_stdin_of_other_commands_is_data_not_commands(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    data = b"reboot\nrm -rf /\n\x00\xff binary\n"
    result = OpenSSH(ssh_gateway).ssh(conn.name, "cat", key=key, input=data)
    assert (result.returncode, result.stdout) == (0, data), result.stderr
    empty = OpenSSH(ssh_gateway).ssh(conn.name, "wc -c", key=key, input=b"")
    assert (empty.returncode, empty.stdout.strip()) == (0, b"0")


@pytest.mark.parametrize("command", ["cat | bash", "env bash -s", "tee /dev/null | sh"])
def test_commands_reaching_a_shell_through_a_pipe_or_wrapper_are_decided(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path, tmp_path: Path, command: str
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    allowed, refused = tmp_path / "allowed", tmp_path / "refused"
    script = f"touch {allowed}\ntouch {refused}; false && reboot\necho done\n"
    result = OpenSSH(ssh_gateway).ssh(conn.name, command, key=key, input=script.encode())
    assert result.stdout == b"done\n", result.stderr
    assert b"reboot stops the server" in result.stderr
    assert allowed.exists() and not refused.exists()
    row = ssh_gateway.session(conn.name)
    lines = [(e["text"], e["decision"]) for e in ssh_gateway.events(row, "ssh.line")]
    assert lines == [
        (f"touch {allowed}", "allow"),
        (f"touch {refused}; false && reboot", "deny"),
        ("echo done", "allow"),
    ]


def test_an_interpreter_reading_its_program_from_stdin_is_uncertain(
    ssh_gateway: SSHGateway, sshd: Sshd, key: Path, tmp_path: Path
) -> None:
    conn = ssh_gateway.add_connection(sshd)
    marker = tmp_path / "marker"
    program = f"open({str(marker)!r}, 'w').close()\n".encode()
    result = OpenSSH(ssh_gateway).ssh(conn.name, "python3 -", key=key, input=program)
    assert result.returncode == 1
    assert b"python3 reads its program from standard input" in result.stderr
    assert not marker.exists()
    (channel,) = ssh_gateway.events(ssh_gateway.session(conn.name), "ssh.channel")
    assert channel["decision"] == "deny"
    assert channel["unknown"] == "python3 reads its program from standard input"
    # The same line inside a piped script: the lines after it are not shell commands.
    piped = OpenSSH(ssh_gateway).ssh(conn.name, "bash", key=key, input=b"python3 -\n" + program)
    assert b"python3 reads its program from standard input" in piped.stderr
    assert not marker.exists()
