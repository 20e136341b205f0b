"""What a command line does with its standard input (jitgate.shell.stdin)."""

from __future__ import annotations

import pytest

from jitgate.shell import classify
from jitgate.shell.stdin import StdinUse, stdin_use


@pytest.mark.parametrize(
    "command",
    [
        "bash",
        "sh -s",
        "bash -s a b",
        "sh -s -- args",
        "sudo bash -l",
        "sudo -u app bash -s",
        "/bin/bash -e -o pipefail",
        "bash -",
        "bash /dev/stdin",
        "bash -- /dev/stdin",
        "bash < /dev/stdin",
        "bash <&0",
        "busybox sh",
        "cat | bash",
        "cat - | sh",
        "tee /dev/null | bash",
        "tee -a log | bash",
        "env bash",
        "exec bash",
        "nice -n 5 bash",
        "timeout 10 bash",
        "nohup bash",
        "sh -c 'cat | bash'",
        "cat | bash | grep x",
    ],
)
def test_a_shell_reading_stdin_has_its_commands_decided(command: str) -> None:
    assert stdin_use(classify(command)) == StdinUse(commands=True)


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("python3", "python3 reads its program from standard input"),
        ("python3 -", "python3 reads its program from standard input"),
        ("python3 -W ignore", "python3 reads its program from standard input"),
        ("sudo python3.12 -u -", "python3.12 reads its program from standard input"),
        ("cat | perl", "perl reads its program from standard input"),
        ("ruby", "ruby reads its program from standard input"),
        ("node -", "node reads its program from standard input"),
        ("psql -f -", "psql reads its program from standard input"),
        ("psql -d app", "psql reads its program from standard input"),
        ("mysql app", "mysql reads its program from standard input"),
        ("sqlite3 app.db", "sqlite3 reads its program from standard input"),
        ("awk -f /dev/stdin", "awk reads its program from standard input"),
        ("sed -f -", "sed reads its program from standard input"),
        ("xargs -I{} sh -c {}", "xargs runs its input with sh"),
        ("xargs python3 -c", "xargs runs its input with python3"),
        ("at now", "at runs its input as commands"),
        ("crontab -", "crontab runs its input as commands"),
        ("base64 -d | bash", "base64 may change what bash reads from standard input"),
        ("cat -n | sh", "cat may change what sh reads from standard input"),
        (
            "curl -s https://example.org | bash",
            "curl may change what bash reads from standard input",
        ),
        ("ls; bash", "ls may change what bash reads from standard input"),
        ("bash setup.sh | bash", "bash may change what bash reads from standard input"),
    ],
)
def test_stdin_that_may_run_unseen_is_uncertain(command: str, reason: str) -> None:
    assert stdin_use(classify(command)) == StdinUse(uncertain=reason)


@pytest.mark.parametrize(
    "command",
    [
        "cat",
        "cat > file",
        "wc -c",
        "bash script.sh",
        "bash -c 'ls'",
        "bash < file",
        "python3 script.py",
        "python3 -c 'print(1)'",
        "python3 -m json.tool",
        "perl -ne print",
        "node -e 1",
        "psql -c 'select 1'",
        "mysql -e 'select 1' app",
        "sqlite3 app.db 'select 1'",
        "awk '{print $1}'",
        "sed s/a/b/",
        "python3 < prog.py",
        "crontab -l",
        "at -l",
        "bash 'syntax",  # unknown already: decided as such
    ],
)
def test_stdin_that_is_data(command: str) -> None:
    assert stdin_use(classify(command)) == StdinUse()
