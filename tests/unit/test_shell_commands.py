"""The shell command-line classifier (jitgate.shell.commands): names, dangers, unknowns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jitgate.shell import classify


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("ls -la", ("ls",)),
        ("ls | grep x && echo done || true; date &", ("ls", "grep", "echo", "true", "date")),
        ("/usr/bin/env FOO=1 nice -n 5 tar czf a.tgz /etc", ("tar",)),
        ("sudo -u root -- systemctl status nginx", ("systemctl",)),
        ("timeout 10 xargs -n 1 rm", ("rm",)),
        ("A=1 B=2 make", ("make",)),
        ("echo $(whoami) `hostname`", ("whoami", "hostname", "echo")),
        ("diff <(ls a) <(ls b)", ("ls", "diff")),
        ("bash -c 'cd /tmp && ls'", ("bash", "cd", "ls")),
        ("eval 'uname -a'", ("eval", "uname")),
        ("su - root -c 'id'", ("id",)),
        ("( cd /srv; ./deploy.sh ) > log 2>&1", ("cd", "deploy.sh")),
        ("if true; then echo y; fi", ("true", "echo")),
        ("echo 'a;b' \"c|d\" e\\;f", ("echo",)),
        ("# only a comment", ()),
        ("", ()),
    ],
)
def test_command_names(line: str, names: tuple[str, ...]) -> None:
    result = classify(line)
    assert not result.unknown, result.error
    assert result.names == names


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("rm -rf /", "deletes the root filesystem"),
        ("rm -r -f /*", "deletes the root filesystem"),
        ("sudo rm -fr /etc/", "deletes /etc"),
        ("rm --recursive --force /usr", "deletes /usr"),
        ("rm -rf --no-preserve-root /", "root filesystem"),
        ("ls; sh -c 'rm -rf /'", "root filesystem"),
        ("mkfs.ext4 /dev/sda1", "formats a filesystem"),
        ("mkswap /dev/sdb", "formats a filesystem"),
        ("dd if=/dev/zero of=/dev/nvme0n1 bs=1M", "dd writes to the device /dev/nvme0n1"),
        ("cat img > /dev/sda", "redirection writes to the device /dev/sda"),
        ("shutdown -h now", "stops the server"),
        ("sudo reboot", "stops the server"),
        ("systemctl poweroff", "stops the server"),
        ("init 0", "stops the server"),
        ("chmod -R 777 /", "changes every file"),
        (":(){ :|:& };:", "fork bomb"),
    ],
)
def test_dangerous_commands(line: str, reason: str) -> None:
    result = classify(line)
    assert any(reason in d for d in result.dangerous), result.dangerous


@pytest.mark.parametrize(
    "line",
    [
        "rm -rf /tmp/build",
        "rm -f /",  # not recursive: rm refuses a directory
        "dd if=/dev/sda of=backup.img",
        "echo x > /dev/null 2>&1",
        "cat /dev/urandom | head -c 10 > /dev/stdout",
        "echo shutdown",
        "grep -r reboot /var/log",
    ],
)
def test_harmless_commands(line: str) -> None:
    result = classify(line)
    assert result.dangerous == () and not result.unknown


@pytest.mark.parametrize(
    "line", ["echo 'open", 'echo "open', "echo $(date", "echo `date", "echo ${HOME"]
)
def test_incomplete_syntax_is_unknown(line: str) -> None:
    result = classify(line)
    assert result.unknown and result.error


def test_dynamic_command_names_are_flagged() -> None:
    assert classify("$CMD --force").dynamic
    assert classify('"$(which rm)" -rf x').dynamic
    assert not classify("ls $HOME").dynamic


def test_overlong_lines_are_unknown() -> None:
    assert classify("echo " + "a" * 70000).unknown


@given(st.text(max_size=300))
def test_never_raises(text: str) -> None:
    result = classify(text)
    assert result.unknown or isinstance(result.names, tuple)


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("for i in 1 2 3; do echo $i; done", ("echo",)),
        ("for f in *.log; do rm $f; done", ("rm",)),
        ("case $x in a) ls;; b|c) pwd;; esac", ("ls", "pwd")),
        ("while read l; do echo $l; done < f", ("read", "echo")),
        ("function f { ls; }", ("ls",)),
        ("f() { ls; }", ("ls",)),
        ("[[ -f x ]] && cat x", ("[[", "cat")),
    ],
)
def test_compound_commands(line: str, names: tuple[str, ...]) -> None:
    result = classify(line)
    assert not result.unknown, result.error
    assert result.names == names


@pytest.mark.parametrize(
    "line", ["for i in 1 2; do", "if true; then", "echo a |", "make &&", "ls \\", "echo 'a"]
)
def test_lines_the_shell_would_continue_are_incomplete(line: str) -> None:
    result = classify(line)
    assert result.incomplete and result.unknown


def test_a_block_closed_but_never_opened_is_unknown() -> None:
    result = classify("done")
    assert result.unknown and not result.incomplete


@pytest.mark.parametrize(
    "line",
    [
        "f() { f | f & }; f",
        "bomb(){ bomb|bomb&};bomb",
        "x; :(){ :|: & };:",
        "function f { f|f& }; f",
        "function f() { f | f &; }; f",
        "echo `:(){ :|:& };:`",
        "fork-x(){ fork-x|fork-x& };fork-x",
    ],
)
def test_fork_bomb_variants(line: str) -> None:
    assert any("fork bomb" in d for d in classify(line).dangerous)


@pytest.mark.parametrize("line", ["f() { g | f & }; f", "a:(){ :|:& };:", "f() { f; }; f"])
def test_functions_that_are_not_fork_bombs(line: str) -> None:
    assert not any("fork bomb" in d for d in classify(line).dangerous)


def _hostile(size: int) -> dict[str, str]:
    """Lines built to make a backtracking pattern try every split of a long run."""
    return {
        "one word": "a" * size,
        "colons": ":" * size,
        "a word and ()": "a" * (size - 4) + "() {",
        "short words": "a " * (size // 2),
        "definitions": "a() { a | " * (size // 10),
        "digits": "1 " * (size // 2),
        "digit run": "1" * size,
        "parameters": "$a " * (size // 3),
        "pipe and blanks": "|" + " " * (size - 2) + "x",
        "assignment": "A" * (size - 2) + "[x",
        "blanks": " \t" * (size // 2),
        "prompt": "password" + " " * (size - 9) + "x",
    }


def test_every_pattern_runs_in_linear_time_on_a_100_kb_line() -> None:
    """Each regular expression the shell classifier and the SSH session run on a line,
    searched over 100 kB lines made to trigger catastrophic backtracking, finishes in
    well under a second (a backtracking fork-bomb pattern took minutes)."""
    import re
    import time

    from jitgate.protocols.ssh import session
    from jitgate.shell import commands

    patterns = [
        value
        for module in (commands, session)
        for value in vars(module).values()
        if isinstance(value, re.Pattern)
    ]
    patterns += list(commands._FORK_BOMBS)
    assert len(patterns) >= 8
    for name, line in _hostile(100_000).items():
        for pattern in patterns:
            started = time.perf_counter()
            pattern.search(line if isinstance(pattern.pattern, str) else line.encode())
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5, (name, pattern.pattern, elapsed)


def test_classifying_a_hostile_line_of_the_largest_size_is_fast() -> None:
    import time

    from jitgate.shell.commands import MAX_LINE

    for name, line in _hostile(MAX_LINE).items():
        # CPU time, not wall time: a shared machine may stall the process for a second
        # (about 0.1 s of CPU each here; a quadratic blow-up would take many seconds).
        started = time.process_time()
        classify(line)
        elapsed = time.process_time() - started
        assert elapsed < 1.0, (name, elapsed)
    assert classify("a" * 100_000).error == "command line too long"
