"""Small pure pieces of the SSH session: log-in names, legacy scp and SFTP server execs."""

from __future__ import annotations

import pytest

from jitgate.protocols.ssh.policy import command_statement, path_statement
from jitgate.protocols.ssh.session import _sftp_server, parse_username
from jitgate.shell import classify
from jitgate.sql.types import CommandKind


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ("prod-db", (None, "prod-db")),
        ("alice+prod-db", ("alice", "prod-db")),
        ("a+b+web", ("a+b", "web")),
        ("+web", (None, "web")),
    ],
)
def test_parse_username(login: str, expected: tuple[str | None, str]) -> None:
    assert parse_username(login) == expected


def test_statements_carry_what_policy_reads() -> None:
    statement = command_statement(classify("sudo rm -rf / && ls"))
    assert statement.functions == {"rm", "ls"} and statement.dangerous
    assert statement.kind is CommandKind.EXECUTE
    assert command_statement(classify("echo 'x")).kind is CommandKind.UNKNOWN
    write = path_statement("open", ("/srv/a",), True)
    assert write.tables_written == {"/srv/a"} and not write.tables_read


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/usr/lib/openssh/sftp-server", True),
        ("/usr/lib/openssh/sftp-server -l INFO -d /srv", True),
        ("internal-sftp", True),
        ("sudo -u www /usr/libexec/sftp-server", True),
        ("true; sftp-server", False),
        ("sftp-server &", False),
        ("sftp-server </dev/null", False),
        ("sh -c 'sftp-server'", False),
        ("echo sftp-server", None),
        ("sftp host", None),
    ],
)
def test_sftp_server(command: str, expected: bool | None) -> None:
    assert _sftp_server(classify(command)) is expected
