"""What the SSH path asks policy, in the policy engine's own vocabulary.

Actions (each is ``in Action::"ssh"`` for Cedar): ``connect``, ``ssh:shell`` (open an
interactive shell), ``ssh:exec`` (an exec request), ``ssh:line`` (a line typed into a
shell), ``ssh:sftp_read`` / ``ssh:sftp_write`` (file operations, SFTP and scp),
``ssh:forward`` (a ``direct-tcpip`` channel; text ``host:port``), ``ssh:env`` (an
environment variable the client sends; text = its name).

The classification travels in the :class:`~jitgate.sql.types.Statement` fields policies
already read: ``tag`` and ``functions`` are the command names, ``dangerous`` the
classifier's reasons, kind ``unknown`` a line that is not valid shell; for file
operations the paths are ``tables_read``/``tables_written``.
"""

from __future__ import annotations

from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision
from jitgate.shell.commands import CommandLine
from jitgate.sql.types import CommandKind, Statement

MAX_TAG = 200


def command_statement(line: CommandLine) -> Statement:
    names = line.names
    tag = " ".join(names)[:MAX_TAG] or "(no command)"
    return Statement(
        kind=CommandKind.UNKNOWN if line.unknown else CommandKind.EXECUTE,
        tag=tag,
        text=line.text,
        start=0,
        end=len(line.text),
        functions=frozenset(names),
        dangerous=line.dangerous,
        error=line.error,
    )


def path_statement(op: str, paths: tuple[str, ...], write: bool) -> Statement:
    text = " -> ".join(paths)
    return Statement(
        kind=CommandKind.EXECUTE,
        tag=op.upper(),
        text=text,
        start=0,
        end=len(text),
        tables_read=frozenset() if write else frozenset(paths),
        tables_written=frozenset(paths) if write else frozenset(),
    )


class SSHPolicy:
    """A session's questions to policy; every answer fails closed (see StatementGate)."""

    def __init__(self, gate: StatementGate) -> None:
        self.gate = gate

    def connect(self) -> Decision:
        return self.gate.decide(None, "", action="connect")

    def shell(self) -> Decision:
        return self.gate.decide(None, "", action="ssh:shell")

    def command(self, line: CommandLine, *, interactive: bool = False) -> Decision:
        action = "ssh:line" if interactive else "ssh:exec"
        return self.gate.decide(command_statement(line), line.text, action=action)

    def file(self, op: str, paths: tuple[str, ...], write: bool) -> Decision:
        statement = path_statement(op, paths, write)
        action = "ssh:sftp_write" if write else "ssh:sftp_read"
        return self.gate.decide(statement, statement.text, action=action)

    def forward(self, host: str, port: int) -> Decision:
        return self.gate.decide(None, f"{host}:{port}", action="ssh:forward")

    def env(self, name: str) -> Decision:
        return self.gate.decide(None, name, action="ssh:env")
