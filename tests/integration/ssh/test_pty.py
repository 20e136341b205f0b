"""An interactive OpenSSH session through a pseudo-terminal: shell, typed-line policy, record."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from jitgate.recording.replay import asciicast
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import OpenSSH, Sshd, SSHGateway


class Terminal:
    """``ssh -tt`` on the slave side of a pty; the test types on the master side."""

    def __init__(
        self, argv: list[str], env: dict[str, str], size: tuple[int, int] | None = None
    ) -> None:
        self.master, slave = os.openpty()
        if size is not None:  # rows, columns
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
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


def _bash_terminal(gw: SSHGateway, sshd: Sshd) -> tuple[Terminal, str]:
    name = unique("tty")
    gw.add_user(name)
    key = gw.add_key(name)
    conn = gw.add_connection(sshd)
    client = OpenSSH(gw)
    argv = ["ssh", *client.options(key), "-tt", "-p", str(gw.port)]
    argv += [f"{conn.name}@127.0.0.1", "env PS1='prompt$ ' TERM=dumb bash --norc --noprofile -i"]
    env = client.env(None)
    env["TERM"] = "xterm"
    return Terminal(argv, env), conn.name


def test_a_switched_screen_does_not_turn_line_policy_off(
    make_ssh_gateway: Callable[..., SSHGateway], sshd: Sshd, tmp_path: Path
) -> None:
    """A full-screen program's lines are reconstructed too, as uncertain: the alternate
    screen can be switched on by anything (here printf, the switch cut in two writes), and
    the shell behind it must still be checked; ``uncertain_lines: deny`` refuses them."""
    gw = make_ssh_gateway(uncertain_lines="deny")
    term, conn = _bash_terminal(gw, sshd)
    marker = tmp_path / "marker"
    try:
        term.expect(rb"prompt\$ ")
        term.type("printf '\\033[?10'; sleep 0.2; printf '49h'; echo switched\r")
        term.expect(rb"hswitched\r\n")
        term.ready(after=b"hswitched")
        term.type(f"touch {marker}\r")
        term.expect(rb"was denied: this line could not be reconstructed exactly")
        term.ready(after=b"was denied")
        mark = len(term.seen)
        term.type("printf '\\033[?1049l'; echo back\r")  # uncertain too: denied
        term.expect(rb"was denied", since=mark)
        term.ready(after=b"was denied")
        mark = len(term.seen)
        term.type("\x1b[?1049l\x03")  # typed keys are not the screen's state
        term.expect(rb"prompt\$ ", since=mark)
        mark = len(term.seen)
        term.type("exit 5\r")  # still behind the switched screen: uncertain, denied
        term.expect(rb"was denied", since=mark)
    finally:
        term.process.kill()
        term.close()
    assert not marker.exists()
    row = gw.session(conn)
    lines = [(e["text"], e["decision"], e.get("uncertain")) for e in gw.events(row, "ssh.line")]
    assert lines[0] == ("printf '\\033[?10'; sleep 0.2; printf '49h'; echo switched", "allow", None)
    assert lines[1] == (f"touch {marker}", "deny", ["full-screen program"])


def test_dangerous_lines_behind_a_switched_screen_are_denied(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    term, conn = _bash_terminal(ssh_gateway, sshd)
    marker = tmp_path / "marker"
    try:
        term.expect(rb"prompt\$ ")
        term.type("printf '\\033[?1049h'; echo switched\r")
        term.expect(rb"hswitched\r\n")
        term.ready(after=b"hswitched")
        term.type(f"touch {marker}; false && reboot\r")
        term.expect(rb"was denied: reboot stops the server")
        term.ready(after=b"was denied")
        term.type("printf '\\033[?1049l'; echo back\r")
        term.expect(rb"lback\r\n")
        term.ready(after=b"lback")
        term.type("exit 4\r")
        assert term.close() == 4
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait(10)
    assert not marker.exists()
    row = ssh_gateway.session(conn)
    lines = [(e["text"], e["decision"], e.get("uncertain"))
             for e in ssh_gateway.events(row, "ssh.line")]  # fmt: skip
    assert lines[1:] == [
        (f"touch {marker}; false && reboot", "deny", ["full-screen program"]),
        ("printf '\\033[?1049l'; echo back", "allow", ["full-screen program"]),
        ("exit 4", "allow", None),
    ]


def test_lines_typed_without_echo_are_redacted_in_the_recording(
    make_ssh_gateway: Callable[..., SSHGateway], sshd: Sshd
) -> None:
    gw = make_ssh_gateway(record_input=True)
    term, conn = _bash_terminal(gw, sshd)
    try:
        term.expect(rb"prompt\$ ")
        term.type('stty -echo; read -r x; stty echo; echo "len-${#x}"\r')
        term.expect(rb"stty echo; echo \"len-\$\{#x\}\"\r\n")  # echoed, then read waits
        time.sleep(0.3)
        term.type("hunter2-xyz\r")  # no prompt that asks for a password: only echo is off
        term.expect(rb"len-11")
        term.ready(after=b"len-11")
        term.type("exit 0\r")
        assert term.close() == 0
    finally:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait(10)
    row = gw.session(conn)
    events = gw.events(row)
    assert "hunter2" not in json.dumps(events)
    lines = gw.events(row, "ssh.line")
    assert [(e["text"], e.get("redacted")) for e in lines][1] == (
        "(a line typed without echo, not recorded)",
        "not echoed",
    )
    typed = "".join(e["d"] for e in gw.events(row, "term") if e["s"] == "i")
    assert "stty -echo" in typed and "*" * 11 in typed
