"""Splitting a shell's standard input into the commands it will run (sans-IO).

A shell without a terminal (``ssh HOST < script``, ``ssh -T HOST``, ``ssh HOST bash -s``)
reads its commands from standard input, line by line, exactly as sent: there is no line
editor in between, so what the gateway reads is what runs. :class:`ScriptReader` is fed
those bytes and gives back one :class:`ScriptCommand` per command the shell would read
as a whole, with the exact bytes to send on if policy allows it:

* a line is a command when the classifier (:func:`jitgate.shell.commands.classify`) finds
  it complete; a line the shell would continue (an open quote, ``do`` without ``done``, a
  trailing ``|`` or backslash) is joined with the next ones, as an interactive shell's
  continuation prompt would;
* here-documents (``<<WORD``, ``<<-WORD``, ``<<'WORD'``) are the data of their command:
  the body lines up to the delimiter travel with it and are not classified as commands;
* blank and comment-only lines are :attr:`ScriptCommand.empty` (they run nothing);
* the last line may lack its newline: :meth:`ScriptReader.end` (at EOF) gives it.

Limits, stated honestly: a command that reads standard input itself (``cat > file``,
``read``, ``python3``, ``mysql``…) consumes the lines after it, which the reader still
takes for shell commands: a data line that looks dangerous is refused. A line that starts
a program reading its *program* from stdin (``python3 -``, ``psql``) is decided as unknown
by the SSH session (:mod:`jitgate.shell.stdin`), as the lines after it are not shell. A command
longer than ``MAX_COMMAND`` (or a here-document longer than ``MAX_BODY``) is decided on what
was read so far, marked *unknown*, and what follows until the end of that command goes or
is dropped with it (:class:`ScriptData`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jitgate.shell.commands import MAX_LINE, CommandLine, classify

MAX_COMMAND = MAX_LINE
MAX_BODY = 1 << 20
#: Characters classified again and again while a multi-line command grows (it is
#: classified after each line that may complete it): past this, it is decided as unknown.
MAX_WORK = 1 << 18
_WORD_END = " \t\r\n;&|()<>"
#: Reserved words that open and close blocks, and those after which a command follows.
_DEPTH = {"if": 1, "do": 1, "case": 1, "{": 1, "fi": -1, "done": -1, "esac": -1, "}": -1}
_BEFORE_COMMAND = {"if", "then", "else", "elif", "do", "while", "until", "{", "}", "!", "time"}
_BARE_END = " \t\r\n;&|()<>'\"`\\$"


@dataclass(frozen=True, slots=True)
class ScriptCommand:
    """One command as the shell reads it: the text classified, the bytes to send on."""

    text: str  # the command lines joined by newlines (here-document bodies left out)
    line: CommandLine
    data: bytes  # exactly what the shell reads for it, bodies and newlines included

    @property
    def empty(self) -> bool:
        return self.line.empty


@dataclass(frozen=True, slots=True)
class ScriptData:
    """More bytes of the command decided last (one that outgrew the limits): they go on
    only if that command was allowed."""

    data: bytes


ScriptItem = ScriptCommand | ScriptData


@dataclass(slots=True)
class _Heredoc:
    delimiter: bytes
    strip_tabs: bool


@dataclass(slots=True)
class ScriptReader:
    max_command: int = MAX_COMMAND
    max_body: int = MAX_BODY
    max_work: int = MAX_WORK
    _partial: bytearray = field(default_factory=bytearray)  # a line without its newline yet
    _lines: list[bytes] = field(default_factory=list)  # command lines of the command
    _data: bytearray = field(default_factory=bytearray)  # all its bytes, bodies included
    _heredocs: list[_Heredoc] = field(default_factory=list)  # bodies still to be read
    _quote: str = ""  # a quote left open at the end of the last command line
    _overflow: bool = False  # the command was decided early: its rest is ScriptData
    _size: int = 0  # bytes of the command lines
    _work: int = 0  # characters classified for this command so far
    _depth: int = 0  # blocks the command lines open (if/do/case/{), by a quick scan

    def feed(self, data: bytes) -> list[ScriptItem]:
        out: list[ScriptItem] = []
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            if self._partial:
                self._partial += data[start : newline + 1]
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = data[start : newline + 1]
            self._line(line, out)
            start = newline + 1
        if start < len(data):
            self._partial += data[start:]
            if self._heredocs:
                held, limit = len(self._data), self.max_command + self.max_body
            else:
                held, limit = self._size, self.max_command
            if len(self._partial) + held > limit:
                self._spill(out)
        return out

    def end(self) -> list[ScriptItem]:
        """End of input: the last line (with no newline) and any command left open."""
        out: list[ScriptItem] = []
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            self._line(line, out)
        if self._data:
            if self._overflow:
                out.append(ScriptData(bytes(self._data)))
            else:
                out.append(self._command())
        self._reset()
        return out

    # ------------------------------------------------------------------ lines

    def _line(self, line: bytes, out: list[ScriptItem]) -> None:
        if self._overflow:
            self._overflow_line(line, out)
            return
        if self._heredocs:
            self._data += line
            self._body_line(line)
            if len(self._data) > self.max_command + self.max_body:
                self._decide_early(out)
                return
        else:
            self._lines.append(line)
            self._data += line
            self._size += len(line)
            self._heredocs.extend(self._scan(line))
            if self._size > self.max_command:
                self._decide_early(out)
                return
            if self._quote or self._depth > 0 or line.rstrip().endswith((b"|", b"&&", b"\\")):
                # Surely incomplete (the quick scan says so): the shell reads on, and the
                # classifier is not run again over a growing command at every line.
                return
        if self._heredocs:
            return
        command = self._command()
        if command.line.incomplete:
            if self._work > self.max_work:
                self._decide_early(out, "command too long to classify")
            return  # the shell reads the next line as part of this command
        out.append(command)
        self._reset()

    def _body_line(self, line: bytes) -> None:
        doc = self._heredocs[0]
        text = line.rstrip(b"\n")
        if doc.strip_tabs:
            text = text.lstrip(b"\t")
        if text == doc.delimiter:
            self._heredocs.pop(0)

    def _overflow_line(self, line: bytes, out: list[ScriptItem]) -> None:
        """The rest of a command decided early: up to its end, as ScriptData."""
        if self._heredocs:
            self._body_line(line)
        else:
            self._heredocs.extend(self._scan(line))
        out.append(ScriptData(line))
        if not self._heredocs and line.endswith(b"\n") and not self._quote:
            self._reset()

    def _decide_early(
        self, out: list[ScriptItem], error: str = "command line too long (in standard input)"
    ) -> None:
        text = self._text()
        line = CommandLine(text[:MAX_LINE], unknown=True, error=error)
        out.append(ScriptCommand(text[:MAX_LINE], line, bytes(self._data)))
        self._data.clear()
        self._lines.clear()
        self._overflow = True
        if not self._heredocs and not self._quote:
            self._reset()

    def _spill(self, out: list[ScriptItem]) -> None:
        """A line with no newline outgrew the limits: decide (or pass on) what is there."""
        chunk = bytes(self._partial)
        self._partial.clear()
        if self._overflow:
            out.append(ScriptData(chunk))
            return
        if not self._heredocs:
            self._lines.append(chunk)
        self._data += chunk
        self._decide_early(out)
        self._overflow = True  # the line goes on until its newline

    def _command(self) -> ScriptCommand:
        text = self._text()
        self._work += len(text)
        return ScriptCommand(text, classify(text), bytes(self._data))

    def _text(self) -> str:
        raw = b"".join(self._lines)
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        return raw.decode("utf-8", "surrogateescape")

    def _reset(self) -> None:
        self._lines.clear()
        self._data.clear()
        self._heredocs.clear()
        self._quote = ""
        self._overflow = False
        self._size = self._work = 0
        self._depth = 0

    # -------------------------------------------------------------- here-docs

    def _scan(self, line: bytes) -> list[_Heredoc]:
        """The here-documents a command line opens (outside quotes and comments)."""
        text = line.decode("utf-8", "surrogateescape")
        found: list[_Heredoc] = []
        quote = self._quote
        command = True  # a command word may start here (its name may be a reserved word)
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if not quote and command and c not in " \t\r\n;&|()<>'\"`\\$#":
                end = i
                while end < n and text[end] not in _BARE_END:
                    end += 1
                word = text[i:end]
                self._depth += _DEPTH.get(word, 0)
                command = word in _BEFORE_COMMAND
                i = end
                continue
            if c in ";&|(){}\n" and not quote:
                command = True
            elif c not in " \t\r":
                command = False
            if quote:
                if c == "\\" and quote == '"':
                    i += 2
                    continue
                if c == quote:
                    quote = ""
                i += 1
                continue
            if c == "\\":
                i += 2
                continue
            if c in "'\"`":
                quote = c
                i += 1
                continue
            if c == "#" and (i == 0 or text[i - 1] in " \t;&|()"):
                break
            if text.startswith("<<", i) and not text.startswith("<<<", i):
                i += 2
                strip = text.startswith("-", i)
                i += 1 if strip else 0
                while i < n and text[i] in " \t":
                    i += 1
                word, i = _delimiter(text, i)
                if word:
                    found.append(_Heredoc(word.encode("utf-8", "surrogateescape"), strip))
                continue
            if text.startswith("<<<", i):
                i += 3
                continue
            i += 1
        self._quote = quote
        return found


def _delimiter(text: str, i: int) -> tuple[str, int]:
    """A here-document's delimiter word at ``i``, its quotes removed."""
    out: list[str] = []
    n = len(text)
    while i < n and text[i] not in _WORD_END:
        c = text[i]
        if c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                end = n
            out.append(text[i + 1 : end])
            i = end + 1
            continue
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), i
