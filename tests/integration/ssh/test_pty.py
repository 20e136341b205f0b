"""An interactive OpenSSH session through a pseudo-terminal: shell, typed-line policy, record."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

from jitgate.recording.replay import asciicast
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway


class Terminal:
    """``ssh -tt`` on the slave side of a pty; the test types on the master side."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: bytes, timeout: float = 10, *, since: int = 0) -> bytes:
        """Wait for ``pattern`` in the output (from offset ``since`` on)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while not regex.search(self.seen, since):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen in {self.seen[-800:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the child side closed
                    if not regex.search(self.seen, since):
                        tail = self.seen[-800:]
                        raise AssertionError(f"{pattern!r} not seen: {tail!r}") from None
        return self.seen

    def type_lines(self, *lines: str) -> None:
        """Type lines one by one, each after the shell's continuation prompt ("> ")."""
        for index, line in enumerate(lines):
            if index:
                self.expect(rb"\r\n> ", since=len(self.seen) - 2)
            self.type(line + "\r")

    def ready(self, *, after: bytes) -> None:
        """Wait for the shell's prompt after the last ``after`` in the output."""
        self.expect(rb"prompt\$ ", since=self.seen.rindex(after))

    def close(self) -> int:
        try:
            return self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            os.close(self.master)


def test_pty_shell_relays_the_terminal_and_denies_typed_lines(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    name = unique("tty")
    ssh_gateway.add_user(name)
    key = ssh_gateway.add_key(name)
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    argv = ["ssh", *client.options(key), "-tt", "-p", str(ssh_gateway.port)]
    argv += [f"{conn.name}@127.0.0.1", "env PS1='prompt$ ' TERM=dumb bash --norc --noprofile -i"]
    env = client.env(None)
    env["TERM"] = "xterm"
    marker = tmp_path / "marker"
    term = Terminal(argv, env)
    try:
        term.expect(rb"prompt\$ ")
        term.type("echo hel''lo-$((6*7))\r")
        term.expect(rb"hello-42")
        term.ready(after=b"hello-42")  # type at the prompt, as a person would
        term.type(f"touch {marker}; false && reboot\r")  # harmless if it ever got through
        term.expect(rb"was denied: reboot stops the server")
        term.ready(after=b"was denied")  # a fresh prompt
        mark = len(term.seen)
        term.type("echo after-denial\r")
        term.expect(rb"\r\nafter-denial", since=mark)
        assert b"command not found" not in term.seen[mark:]  # nothing of the denied line ran
        term.ready(after=b"\r\nafter-denial")
        term.type("echo still-fine-x\x7f\x7fok\r")  # backspaces are replayed
        term.expect(rb"\r\nstill-fineok")
        term.ready(after=b"\r\nstill-fineok")
        # A multi-line command is decided as a whole, when its last line is entered; each
        # line is typed at the shell's continuation prompt.
        term.type_lines("for i in 1 2; do", "echo loop-$i", "done")
        term.expect(rb"loop-1\r\nloop-2")
        term.ready(after=b"loop-1\r\nloop-2")
        mark = len(term.seen)
        term.type_lines("if true; then", f"touch {marker}; false && reboot", "fi")
        term.expect(rb"was denied: reboot stops the server", since=mark)
        term.ready(after=b"was denied")
        term.type("exit 7\r")
        status = term.close()
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait(10)
    assert status == 7
    assert not marker.exists()
    row = ssh_gateway.session(conn.name)
    lines = ssh_gateway.events(row, "ssh.line")
    assert [(e["text"], e["decision"]) for e in lines] == [
        ("echo hel''lo-$((6*7))", "allow"),
        (f"touch {marker}; false && reboot", "deny"),
        ("echo after-denial", "allow"),
        ("echo still-fineok", "allow"),
        ("for i in 1 2; do\necho loop-$i\ndone", "allow"),
        (f"if true; then\ntouch {marker}; false && reboot\nfi", "deny"),
        ("exit 7", "allow"),
    ]
    frames = ssh_gateway.events(row, "term")
    output = "".join(f["d"] for f in frames if f["s"] == "o")
    assert "hello-42" in output and "after-denial" in output
    assert any(f["s"] == "r" for f in frames)  # the window size, as an asciicast resize
    cast = asciicast(ssh_gateway.events(row)).splitlines()
    assert json.loads(cast[0])["version"] == 2
    assert any("hello-42" in json.loads(frame)[2] for frame in cast[1:])
    ssh_gateway.verify(row)


def test_a_prompt_that_looks_like_a_password_prompt_does_not_switch_policy_off(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    """Only a line the remote does not echo, at a password prompt, is a secret: a shell
    prompt that looks like one echoes what is typed, so its lines are decided as usual."""
    name = unique("tty")
    ssh_gateway.add_user(name)
    key = ssh_gateway.add_key(name)
    conn = ssh_gateway.add_connection(sshd)
    client = OpenSSH(ssh_gateway)
    argv = ["ssh", *client.options(key), "-tt", "-p", str(ssh_gateway.port)]
    argv += [f"{conn.name}@127.0.0.1", "env PS1='token: ' TERM=dumb bash --norc --noprofile -i"]
    env = client.env(None)
    env["TERM"] = "xterm"
    marker = tmp_path / "marker"
    term = Terminal(argv, env)
    try:
        term.expect(rb"token: ")
        term.type(f"touch {marker}; false && reboot\r")  # all at once: before any echo
        term.expect(rb"was denied: reboot stops the server")
        term.expect(rb"token: ", since=term.seen.rindex(b"was denied"))
        mark = len(term.seen)
        term.type("read -s -p 'Password: ' pw; echo \"got-${#pw}\"\r")
        term.expect(rb"\r\nPassword: ", since=mark)  # the prompt, not the echo of the line
        term.type("hunter2\r")  # not echoed: a secret, never put to policy or recorded
        term.expect(rb"got-7", since=mark)
        term.expect(rb"token: ", since=term.seen.rindex(b"got-7"))
        term.type("exit 3\r")
        status = term.close()
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait(10)
    assert status == 3
    assert not marker.exists()
    row = ssh_gateway.session(conn.name)
    lines = [(e.get("text"), e.get("decision"), e.get("secret"))
             for e in ssh_gateway.events(row, "ssh.line")]  # fmt: skip
    assert lines == [
        (f"touch {marker}; false && reboot", "deny", None),
        ("read -s -p 'Password: ' pw; echo \"got-${#pw}\"", "allow", None),
        (None, None, True),
        ("exit 3", "allow", None),
    ]
