"""A shell's standard input split into the commands it runs (jitgate.shell.script)."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from jitgate.shell import classify
from jitgate.shell.script import ScriptCommand, ScriptData, ScriptReader


def commands(*chunks: bytes, end: bool = True) -> list[tuple[str, bytes]]:
    reader = ScriptReader()
    items = [item for chunk in chunks for item in reader.feed(chunk)]
    if end:
        items += reader.end()
    out = []
    for item in items:
        assert isinstance(item, ScriptCommand)
        out.append((item.text, item.data))
    return out


def test_each_line_is_a_command_with_its_exact_bytes() -> None:
    assert commands(b"echo a\nls -l\r\n\nexit 3") == [
        ("echo a", b"echo a\n"),
        ("ls -l\r", b"ls -l\r\n"),
        ("", b"\n"),
        ("exit 3", b"exit 3"),
    ]


def test_lines_split_across_chunks_are_joined() -> None:
    assert commands(b"ec", b"ho a\nec", b"ho b\n") == [
        ("echo a", b"echo a\n"),
        ("echo b", b"echo b\n"),
    ]


def test_a_line_without_newline_waits_for_more_or_for_the_end() -> None:
    reader = ScriptReader()
    assert reader.feed(b"echo a") == []
    [item] = reader.end()
    assert isinstance(item, ScriptCommand) and item.data == b"echo a"


def test_multi_line_commands_are_one_command() -> None:
    script = b"for i in 1 2; do\necho $i\ndone\necho 'a\nb'\nls |\nwc -l\nls \\\n-l\n"
    assert [text for text, _ in commands(script)] == [
        "for i in 1 2; do\necho $i\ndone",
        "echo 'a\nb'",
        "ls |\nwc -l",
        "ls \\\n-l",
    ]


def test_here_document_bodies_are_data_of_their_command() -> None:
    script = (
        b"cat <<EOF >x\nreboot\nrm -rf /\nEOF\n"
        b"cat <<-'END'\n\tit's\n\tEND\nwc <<< 'a <<B'\necho done\n"
    )
    got = commands(script)
    assert [text for text, _ in got] == [
        "cat <<EOF >x",
        "cat <<-'END'",
        "wc <<< 'a <<B'",
        "echo done",
    ]
    assert got[0][1] == b"cat <<EOF >x\nreboot\nrm -rf /\nEOF\n"
    assert classify(got[0][0]).dangerous == ()


def test_two_here_documents_on_one_line() -> None:
    got = commands(b"paste <<A <<B\n1\nA\n2\nB\nls\n")
    assert got == [("paste <<A <<B", b"paste <<A <<B\n1\nA\n2\nB\n"), ("ls", b"ls\n")]


def test_a_quoted_or_commented_here_document_operator_is_not_one() -> None:
    got = commands(b"echo '<<X'\necho x # <<Y\nls\n")
    assert [text for text, _ in got] == ["echo '<<X'", "echo x # <<Y", "ls"]


def test_an_overlong_line_is_decided_as_unknown_and_its_rest_follows_it() -> None:
    reader = ScriptReader(max_command=100)
    items = reader.feed(b"echo " + b"a" * 200)
    items += reader.feed(b"b" * 50 + b"\nls\n")
    first = items[0]
    assert isinstance(first, ScriptCommand) and first.line.unknown
    assert "too long" in (first.line.error or "")
    rest = [i for i in items[1:] if isinstance(i, ScriptData)]
    assert b"".join(i.data for i in rest) == b"b" * 50 + b"\n"
    assert isinstance(items[-1], ScriptCommand) and items[-1].text == "ls"


def test_a_huge_multi_line_command_is_bounded() -> None:
    reader = ScriptReader()
    started = time.perf_counter()
    items = reader.feed(b"if true; then\n" + b"echo 'x' }\n" * 6000 + b"fi\nls\n")
    assert time.perf_counter() - started < 5
    assert isinstance(items[0], ScriptCommand) and items[0].line.unknown
    assert isinstance(items[-1], ScriptCommand) and items[-1].text == "ls"


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_every_byte_is_in_exactly_one_item_in_order(data: bytes, step: int) -> None:
    reader = ScriptReader(max_command=64, max_body=64)
    items = []
    for i in range(0, len(data), step):
        items += reader.feed(data[i : i + step])
    items += reader.end()
    assert b"".join(i.data for i in items) == data
