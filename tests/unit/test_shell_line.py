"""Interactive line reconstruction (jitgate.shell.line): what is replayed, what is uncertain."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jitgate.shell import LineEditor


def lines(keys: str) -> list[tuple[str, bool]]:
    editor = LineEditor()
    return [(line.text, line.uncertain) for _, line in editor.feed(keys)]


def test_printable_backspace_and_enter() -> None:
    assert lines("ls -lx\x7fa\r") == [("ls -la", False)]
    assert lines("abc\x08\x08d\n") == [("ad", False)]
    assert lines("héllo wörld\r") == [("héllo wörld", False)]


def test_kill_line_and_kill_word() -> None:
    assert lines("rm -rf /tmp\x15echo safe\r") == [("echo safe", False)]
    assert lines("echo one two  \x17three\r") == [("echo one three", False)]


def test_ctrl_c_abandons_the_line() -> None:
    assert lines("rm -rf /\x03ls\r") == [("ls", False)]


def test_several_lines_in_one_chunk() -> None:
    assert lines("a\rb\rc") == [("a", False), ("b", False)]


def test_history_completion_and_cursor_keys_make_the_line_uncertain() -> None:
    assert lines("\x1b[Arm\r") == [("rm", True)]
    assert lines("sys\tstop\r") == [("sys\tstop", True)]
    assert lines("\x12reboot\r") == [("reboot", True)]
    assert lines("ls\x1b[D\x1b[Dx\r") == [("lsx", True)]
    editor = LineEditor()
    [(_, first)] = editor.feed("\x1bbx\r")
    assert first.uncertain and "Alt/Meta" in first.reasons[0]
    [(_, second)] = editor.feed("ls\r")  # certainty comes back with the next line
    assert not second.uncertain


def test_bracketed_paste_is_kept_as_typed() -> None:
    assert lines("\x1b[200~rm -rf /\x1b[201~\r") == [("rm -rf /", False)]


def test_escape_sequences_split_across_chunks() -> None:
    editor = LineEditor()
    assert editor.feed("ls\x1b") == []
    assert editor.feed("[") == []
    [(_, line)] = editor.feed("Cx\r")
    assert (line.text, line.uncertain) == ("lsx", True)


def test_lines_typed_in_full_screen_programs_are_uncertain() -> None:
    editor = LineEditor()
    editor.feed("vi")
    editor.set_screen(True)  # what was typed before the switch is not part of any line
    [(_, line)] = editor.feed("reboot\r")
    assert (line.text, line.uncertain, line.reasons) == ("reboot", True, ("full-screen program",))
    editor.set_screen(False)
    [(_, line)] = editor.feed("ls\r")
    assert (line.text, line.uncertain) == ("ls", False)


def test_feed_line_stops_after_each_line() -> None:
    editor = LineEditor()
    end, line = editor.feed_line("a\rb\r")
    assert end == 2 and line is not None and line.text == "a"
    end, line = editor.feed_line("a\rb\r", end)
    assert end == 4 and line is not None and line.text == "b"


@given(st.text(max_size=200))
def test_never_raises_and_lines_stay_bounded(keys: str) -> None:
    for _, line in LineEditor().feed(keys):
        assert len(line.text) <= len(keys)


def test_ctrl_c_is_reported_to_the_caller() -> None:
    editor = LineEditor()
    editor.feed("for i in 1; do\r")
    assert not editor.interrupted
    editor.feed("\x03")
    assert editor.interrupted
