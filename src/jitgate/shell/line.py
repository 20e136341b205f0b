"""Best-effort reconstruction of the command lines typed into an interactive shell.

The gateway sees keystrokes, not command lines: the remote shell's line editor
(readline, zle, …) turns keys into a line, and completion, history and cursor movement
happen on the server. :class:`LineEditor` replays the part of that editing that can be
replayed from the keystrokes alone:

* printable characters (any Unicode) are appended;
* backspace/DEL remove one character, Ctrl-U clears the line, Ctrl-W removes the last
  word (readline's unix-word-rubout: trailing blanks, then non-blanks);
* Ctrl-C abandons the line, Ctrl-D on an empty line is end of input;
* CR or LF completes the line;
* bracketed paste (``ESC [200~ … ESC [201~``) is pasted text, kept as typed.

Everything else — other escape sequences (arrow keys, Home/End, Alt-… key bindings),
Tab (completion), Ctrl-R (history search), Ctrl-A/E/K/Y/T and other editing keys — makes
the line *uncertain*: the text kept is what was typed, but the shell may be about to run
something else. It is honest about that; it does not emulate readline.

It also cannot know *what* reads the keystrokes: a line typed into ``vim``, ``less``, a
Python prompt or a password prompt is reconstructed too. Callers tell it with
:meth:`LineEditor.set_screen` when the remote switches to the alternate screen, as
full-screen programs do: lines are still reconstructed there (anything can switch the
screen, ``printf '\\033[?1049h'`` included, so a shell behind a switched screen must not go
unchecked), but every one of them is *uncertain* ("full-screen program"): it may be text
typed into an editor, not a command, so it may be refused but is never a sure allow.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 16 * 1024

FULL_SCREEN = "full-screen program"
_PASTE_START = "\x1b[200~"
_PASTE_END = "\x1b[201~"


@dataclass(frozen=True, slots=True)
class TypedLine:
    """A completed line: what was typed, and whether that is surely what runs."""

    text: str
    uncertain: bool
    reasons: tuple[str, ...] = ()


class LineEditor:
    def __init__(self) -> None:
        self._chars: list[str] = []
        self._reasons: list[str] = []
        self._escape = ""  # a pending escape sequence
        self._paste = False
        self.full_screen = False
        self.interrupted = False  # Ctrl-C seen (callers clear it): continuation lines end

    @property
    def pending(self) -> str:
        return "".join(self._chars)

    @property
    def uncertain(self) -> bool:
        return bool(self._reasons)

    def set_screen(self, full_screen: bool) -> None:
        if full_screen != self.full_screen:
            self.full_screen = full_screen
            self.reset()

    def reset(self) -> None:
        self._chars.clear()
        self._reasons.clear()
        self._escape = ""
        self._paste = False

    def feed(self, text: str) -> list[tuple[int, TypedLine]]:
        """Feed typed text; return each line completed, with the offset of its CR/LF."""
        done: list[tuple[int, TypedLine]] = []
        for index, c in enumerate(text):
            line = self._key(c)
            if line is not None:
                done.append((index, line))
        return done

    def feed_line(self, text: str, start: int = 0) -> tuple[int, TypedLine | None]:
        """Feed ``text[start:]`` until a line completes: (index after its CR/LF, line).

        With no completed line, everything is consumed: ``(len(text), None)``.
        """
        for index in range(start, len(text)):
            line = self._key(text[index])
            if line is not None:
                return index + 1, line
        return len(text), None

    def _uncertain(self, reason: str) -> None:
        if reason not in self._reasons:
            self._reasons.append(reason)

    def _key(self, c: str) -> TypedLine | None:
        if self._escape:
            self._escape += c
            return self._escape_step()
        if self._paste:
            if c == "\x1b":
                self._escape = c
                return None
            if c in "\r\n":
                # a newline inside a paste runs the line before it in most shells
                return self._complete()
            self._append(c)
            return None
        if c in "\r\n":
            return self._complete()
        if c in "\x7f\x08":
            if self._chars:
                self._chars.pop()
            return None
        if c == "\x15":  # ^U
            self._chars.clear()
            return None
        if c == "\x17":  # ^W
            while self._chars and self._chars[-1] in " \t":
                self._chars.pop()
            while self._chars and self._chars[-1] not in " \t":
                self._chars.pop()
            return None
        if c == "\x03":  # ^C: the line is abandoned
            self.reset()
            self.interrupted = True
            return None
        if c == "\x04":  # ^D
            if self._chars:
                self._uncertain("Ctrl-D inside a line")
            return None
        if c == "\x1b":
            self._escape = c
            return None
        if c == "\t":
            self._uncertain("tab completion")
            self._append(c)
            return None
        if c == "\x12":
            self._uncertain("history search")
            return None
        if c < " ":
            self._uncertain(f"editing key Ctrl-{chr(ord(c) + 64)}")
            return None
        self._append(c)
        return None

    def _escape_step(self) -> TypedLine | None:
        seq = self._escape
        if _PASTE_START.startswith(seq) or _PASTE_END.startswith(seq):
            if seq == _PASTE_START:
                self._escape = ""
                self._paste = True
            elif seq == _PASTE_END:
                self._escape = ""
                self._paste = False
            return None
        # any other sequence: wait for its final byte, then give up on certainty
        if len(seq) == 2 and seq[1] not in "[O":
            self._escape = ""
            self._uncertain("an Alt/Meta key binding")
            return None
        if (len(seq) > 2 and "@" <= seq[-1] <= "~") or len(seq) > 32:
            self._escape = ""
            self._uncertain("cursor or history keys")
        return None

    def _append(self, c: str) -> None:
        if len(self._chars) < MAX_LINE:
            self._chars.append(c)
        else:
            self._uncertain("line too long")

    def _complete(self) -> TypedLine:
        if self.full_screen:
            self._uncertain(FULL_SCREEN)
        line = TypedLine("".join(self._chars), bool(self._reasons), tuple(self._reasons))
        paste = self._paste
        self.reset()
        self._paste = paste
        return line
