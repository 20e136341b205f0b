"""Classifying a POSIX shell command line for policy (pure; no I/O).

A command line (an SSH ``exec`` request, or a line typed into an interactive shell) is
split the way ``sh`` would split it, closely enough for policy:

* words follow shlex-like quoting: ``'…'`` is literal, ``"…"`` and bare words honour
  backslash escapes; ``$(…)``, ``` `…` ``` and ``<(…)`` substitutions are classified as
  command lines of their own;
* lists are split on ``;``, ``&``, ``&&``, ``||``, ``|``, ``|&``, newlines and the
  parentheses/braces of subshells and groups;
* a simple command's *name* is its first word after variable assignments and after
  transparent wrappers (``sudo``, ``env``, ``nohup``, ``time``, ``nice``, ``exec``,
  ``command``, ``timeout N``, ``xargs``…); ``sh -c 'STRING'``, ``bash -c`` and ``eval``
  classify their string argument too.

What it cannot see it says so: a syntax error (an unclosed quote or substitution) makes
the line *unknown* — policy fails closed on unknown — and a command name that is not a
literal word (``$CMD``, ``"$(pick)"``, ``*``) is reported in ``dynamic``. Shell
functions, aliases, ``PATH`` tricks, here-document bodies and programs that interpret
their input (``python``, ``perl -e``, ``awk``) are beyond any static classifier: a
policy that must be airtight allows a list of known commands instead of denying a list of
bad ones.

``dangerous`` holds human-readable reasons for commands that destroy a host: deleting the
root filesystem or a top-level system directory recursively, formatting a filesystem,
writing a block device with ``dd`` or a redirection, shutting the machine down, a fork
bomb. The default policy pack denies them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_LINE = 64 * 1024
MAX_DEPTH = 8

#: Operators that end a simple command (longest first).
_OPERATORS = ("&&", "||", "|&", ";;", ";", "&", "|", "\n", "(", ")")
_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*+(\[[^]]*+\])?\+?=")
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for",
             "case", "esac", "in", "select", "function", "{", "}", "!", "[[", "]]", "time",
             "coproc"}  # fmt: skip
#: Wrappers that run their arguments as a command (options skipped).
_WRAPPERS = {"sudo", "doas", "env", "nohup", "nice", "ionice", "exec", "command", "builtin",
             "time", "timeout", "xargs", "stdbuf", "chroot", "setsid", "unbuffer", "watch",
             "strace", "ltrace", "flock", "caffeinate", "chrt", "taskset", "runuser",
             "su"}  # fmt: skip
_WRAPPER_ARGS = {"timeout": 1, "chroot": 1, "flock": 1, "chrt": 1, "taskset": 1}
_WRAPPER_OPTS_WITH_VALUE = {
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-R"},
    "env": {"-u", "-C", "-S"},
    "nice": {"-n"},
    "ionice": {"-c", "-n", "-p"},
    "timeout": {"-s", "-k", "--signal", "--kill-after"},
    "xargs": {"-I", "-L", "-n", "-P", "-s", "-d", "-E", "-a"},
    "runuser": {"-u", "-g", "-G"},
    "su": {"-c", "-s", "-g", "-G"},
    "watch": {"-n", "-d"},
    "stdbuf": {"-i", "-o", "-e"},
}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "fish"}
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt",
                "/proc", "/root", "/sbin", "/srv", "/sys", "/usr", "/var", "/*"}  # fmt: skip
_SHUTDOWN = {"shutdown", "reboot", "halt", "poweroff"}
_MKFS = {"mkfs", "mke2fs", "mkswap", "wipefs", "mkdosfs", "mkntfs"}
_HARMLESS_DEVICES = re.compile(
    r"^/dev/(null|zero|random|urandom|tty\w*|stdout|stderr|stdin|fd/\d+|pts/\d+)$"
)
# A fork bomb: a function that pipes itself into itself in the background, then is called
# (``:(){ :|:& };:``, ``f() { f | f & }; f``, ``function f { f|f& }; f``). Every pattern run
# on a command line must take time linear in its length, whatever the line: a name is a
# whole word (possessive ``++``, and only where a word starts, by the lookbehind), so no
# start position is tried more than once per length of its word.
_NAME_CHAR = r"[^\s|&;()<>{}'\"\\$`]"
_BOMB_BODY = r"\s*+\{\s*+\1\s*+\|&?\s*+\1\s*+&\s*+;?\s*+\}\s*+;?\s*+\1"
_FORK_BOMBS = (
    re.compile(rf"(?<!{_NAME_CHAR})({_NAME_CHAR}++)\s*+\(\s*+\){_BOMB_BODY}"),
    re.compile(rf"(?<!{_NAME_CHAR})function\s++({_NAME_CHAR}++)(?:\s*+\(\s*+\))?{_BOMB_BODY}"),
)
_REDIRECT_AT = re.compile(r"(?:(?<!\d)\d++)?(>>|>\||>&|&>>|&>|<<<|<<-|<<|<>|<&|>|<)")
_FD_REDIRECT = re.compile(r"(?<!\d)\d++[<>]")
_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*+|[0-9@*#?$!-])")


class ShellSyntaxError(ValueError):
    """The line is not complete shell syntax (an unclosed quote or substitution)."""


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    """One simple command: its name (after wrappers) and its words."""

    name: str
    argv: tuple[str, ...]
    redirects: tuple[tuple[str, str], ...] = ()  # (operator, target)
    wrappers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandLine:
    """A classified command line; ``names`` are the command names it runs, in order."""

    text: str
    commands: tuple[SimpleCommand, ...] = ()
    dynamic: bool = False
    dangerous: tuple[str, ...] = ()
    unknown: bool = False
    error: str | None = None
    uncertain: bool = False  # set by interactive reconstruction, never by the parser
    incomplete: bool = False  # the shell would wait for more lines (unclosed quote, `do`…)

    @property
    def names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for command in self.commands:
            seen.setdefault(command.name, None)
        return tuple(seen)

    @property
    def empty(self) -> bool:
        return not self.commands and not self.unknown


@dataclass(slots=True)
class _Word:
    text: str = ""
    literal: bool = True  # no expansion in it (no $, `, glob)
    quoted: bool = False


@dataclass(slots=True)
class _State:
    commands: list[SimpleCommand] = field(default_factory=list)
    dynamic: bool = False
    dangerous: list[str] = field(default_factory=list)
    open_blocks: int = 0  # if/do/case/{ minus fi/done/esac/}
    in_case: int = 0  # inside `case … in`, before `esac`
    expect_pattern: bool = False


_OPENERS = {"if": 1, "do": 1, "case": 1, "{": 1, "fi": -1, "done": -1, "esac": -1, "}": -1}
_CONTINUATIONS = ("||", "&&", "|", "\\")


def _continued(text: str) -> bool:
    """The line ends in ``||``, ``&&``, ``|`` or a backslash: the shell wants more."""
    return text.rstrip().endswith(_CONTINUATIONS)


def classify(text: str) -> CommandLine:
    """Classify one command line. Never raises: a syntax error gives ``unknown``."""
    if len(text) > MAX_LINE:
        return CommandLine(text[:MAX_LINE], unknown=True, error="command line too long")
    state = _State()
    try:
        _classify_into(text, state, 0)
    except ShellSyntaxError as exc:
        incomplete = str(exc).startswith("unclosed")
        return CommandLine(text, unknown=True, error=str(exc), incomplete=incomplete)
    if any(bomb.search(text) for bomb in _FORK_BOMBS):
        state.dangerous.append("a fork bomb exhausts the server's processes")
    error = None
    if state.open_blocks > 0 or _continued(text):
        error = "the command is not complete"
    elif state.open_blocks < 0:
        error = "a block is closed that was never opened"
    return CommandLine(
        text,
        tuple(state.commands),
        state.dynamic,
        tuple(dict.fromkeys(state.dangerous)),
        unknown=error is not None,
        error=error,
        incomplete=state.open_blocks > 0 or _continued(text),
    )


def _classify_into(text: str, state: _State, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ShellSyntaxError("command substitutions nested too deeply")
    for words, terminator in _simple_commands(text, state, depth):
        if not _compound_header(words, terminator, state, depth):
            _command(words, state, depth)


def _compound_header(items: list[_Word | str], terminator: str, state: _State, depth: int) -> bool:
    """Track keywords; True when the segment is a header or pattern, not a command."""
    words = [w for w in items if isinstance(w, _Word)]
    if state.in_case and state.expect_pattern and terminator in (")", "|"):
        state.expect_pattern = terminator == "|"  # `pattern|pattern)` of a case item
        if words and not words[0].quoted and words[0].text == "esac":
            state.in_case -= 1
            state.open_blocks -= 1
        return True
    if terminator == ";;" and state.in_case:
        state.expect_pattern = True
    for word in words:  # leading reserved words open and close blocks
        if word.quoted or word.text not in _RESERVED:
            break
        state.open_blocks += _OPENERS.get(word.text, 0)
        if word.text == "esac" and state.in_case:
            state.in_case -= 1
    head = words[0].text if words and not words[0].quoted else ""
    if head in ("for", "select"):  # `for NAME in WORDS` runs nothing itself
        return True
    if head == "case":
        state.in_case += 1
        state.expect_pattern = True
        return True
    if head == "function":  # `function NAME { BODY…`: the body's first command follows
        rest = words[2:]
        if rest and not rest[0].quoted and rest[0].text == "{":
            state.open_blocks += 1
            rest = rest[1:]
        if rest:
            _command(list(rest), state, depth)
        return True
    return terminator == "(" and len(words) == 1  # `NAME()`: a function definition's name


# ------------------------------------------------------------------ tokenising


def _simple_commands(
    text: str, state: _State, depth: int
) -> Iterator[tuple[list[_Word | str], str]]:
    """Yield each simple command (words and redirection operators) and what ended it."""
    current: list[_Word | str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if text.startswith(("<(", ">("), i):
            word, i = _read_word(text, i, state, depth)
            current.append(word)
            continue
        redirect = text.startswith("&>", i) or c in "<>" or (c.isdigit() and _redirect_at(text, i))
        op = None if redirect else next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            if current:
                yield current, op
            current = []
            i += len(op)
            continue
        if redirect:
            m = _REDIRECT_AT.match(text, i)
            assert m is not None
            current.append(m.group(0))
            i = m.end()
            continue
        word, i = _read_word(text, i, state, depth)
        if word.text or word.quoted:
            current.append(word)
    if current:
        yield current, ""


def _redirect_at(text: str, i: int) -> bool:
    return _FD_REDIRECT.match(text, i) is not None


def _read_word(text: str, i: int, state: _State, depth: int) -> tuple[_Word, int]:
    word = _Word()
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n;&|()<>":
            if c in "<>" and text.startswith("(", i + 1):  # process substitution <(…)
                end = _matching_paren(text, i + 2)
                _classify_into(text[i + 2 : end], state, depth + 1)
                word.literal = False
                out.append(text[i : end + 1])
                i = end + 1
                continue
            break
        if c == "\\":
            if i + 1 >= n:
                i += 1
                continue
            out.append(text[i + 1])
            i += 2
            continue
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unclosed single quote")
            out.append(text[i + 1 : end])
            word.quoted = True
            i = end + 1
            continue
        if c == '"':
            i = _read_double_quoted(text, i + 1, out, word, state, depth)
            word.quoted = True
            continue
        if c == "$":
            i = _read_dollar(text, i, out, word, state, depth)
            continue
        if c == "`":
            end = _backtick_end(text, i + 1)
            _classify_into(text[i + 1 : end], state, depth + 1)
            word.literal = False
            out.append(text[i : end + 1])
            i = end + 1
            continue
        if c in "*?[":
            word.literal = False
        out.append(c)
        i += 1
    word.text = "".join(out)
    return word, i


def _read_double_quoted(
    text: str, i: int, out: list[str], word: _Word, state: _State, depth: int
) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
            out.append(text[i + 1])
            i += 2
            continue
        if c == "$":
            i = _read_dollar(text, i, out, word, state, depth)
            continue
        if c == "`":
            end = _backtick_end(text, i + 1)
            _classify_into(text[i + 1 : end], state, depth + 1)
            word.literal = False
            out.append(text[i : end + 1])
            i = end + 1
            continue
        out.append(c)
        i += 1
    raise ShellSyntaxError("unclosed double quote")


def _read_dollar(text: str, i: int, out: list[str], word: _Word, state: _State, depth: int) -> int:
    if text.startswith("$((", i):
        end = text.find("))", i + 3)
        if end < 0:
            raise ShellSyntaxError("unclosed arithmetic expansion")
        word.literal = False
        out.append(text[i : end + 2])
        return end + 2
    if text.startswith("$(", i):
        end = _matching_paren(text, i + 2)
        _classify_into(text[i + 2 : end], state, depth + 1)
        word.literal = False
        out.append(text[i : end + 1])
        return end + 1
    if text.startswith("${", i):
        end = text.find("}", i + 2)
        if end < 0:
            raise ShellSyntaxError("unclosed parameter expansion")
        word.literal = False
        out.append(text[i : end + 1])
        return end + 1
    if text.startswith("$'", i):  # ANSI-C quoting: literal enough for names
        end = i + 2
        while end < len(text) and text[end] != "'":
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            raise ShellSyntaxError("unclosed $'…' quote")
        out.append(text[i + 2 : end])
        word.quoted = True
        return end + 1
    m = _PARAMETER.match(text, i)
    if m:
        word.literal = False
        out.append(m.group(0))
        return m.end()
    out.append("$")
    return i + 1


def _matching_paren(text: str, i: int) -> int:
    """Index of the ``)`` closing a ``$(``/``<(`` whose body starts at ``i``."""
    depth = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unclosed single quote")
            i = end + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ShellSyntaxError("unclosed double quote")
            i = j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("unclosed command substitution")


def _backtick_end(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            return i
        i += 1
    raise ShellSyntaxError("unclosed backquote")


# ------------------------------------------------------------------ commands


def _command(items: list[_Word | str], state: _State, depth: int) -> None:
    words: list[_Word] = []
    redirects: list[tuple[str, str]] = []
    pending: str | None = None
    for item in items:
        if isinstance(item, str):
            pending = item
            continue
        if pending is not None:
            redirects.append((pending, item.text))
            pending = None
            continue
        words.append(item)
    for op, target in redirects:
        device = target.startswith("/dev/") and not _HARMLESS_DEVICES.match(target)
        if ">" in op and device:
            state.dangerous.append(f"redirection writes to the device {target}")
    if words and not words[0].quoted and words[0].text == "[[":
        state.commands.append(SimpleCommand("[[", tuple(w.text for w in words)))
        return
    # skip assignments and reserved words
    k = 0
    while k < len(words) and (
        (not words[k].quoted and _ASSIGNMENT.match(words[k].text))
        or (not words[k].quoted and words[k].text in _RESERVED)
    ):
        k += 1
    words = words[k:]
    if not words:
        return
    wrappers: list[str] = []
    while words:
        head = words[0]
        name = posixpath.basename(head.text) if head.literal else head.text
        if not head.literal:
            break
        if name in ("su", "runuser"):
            inner = _su_command(words[1:])
            if inner is not None:
                wrappers.append(name)
                _classify_into(inner, state, depth + 1)
                return
        if name in _WRAPPERS and name != "su" and len(words) > 1:
            rest = _skip_wrapper(name, words[1:])
            if rest is None:
                break
            wrappers.append(name)
            words = rest
            continue
        break
    if not words:
        return
    head = words[0]
    argv = tuple(w.text for w in words)
    if not head.literal:
        state.dynamic = True
        name = head.text
    else:
        name = posixpath.basename(head.text)
    command = SimpleCommand(name, argv, tuple(redirects), tuple(wrappers))
    state.commands.append(command)
    if name in _SHELLS:
        inner = _dash_c(words[1:])
        if inner is not None:
            _classify_into(inner, state, depth + 1)
    elif name == "eval":
        _classify_into(" ".join(argv[1:]), state, depth + 1)
    state.dangerous.extend(_dangers(command))


def _skip_wrapper(name: str, words: list[_Word]) -> list[_Word] | None:
    """The words after a wrapper's own options and arguments, or None if it runs nothing."""
    with_value = _WRAPPER_OPTS_WITH_VALUE.get(name, set())
    i = 0
    while i < len(words):
        text = words[i].text
        if name == "env" and not words[i].quoted and _ASSIGNMENT.match(text):
            i += 1
            continue
        if text == "--":
            i += 1
            break
        if text.startswith("-") and len(text) > 1:
            i += 2 if text in with_value else 1
            continue
        break
    i += _WRAPPER_ARGS.get(name, 0)
    if name == "xargs" and i >= len(words):
        return None
    return words[i:] if i < len(words) else None


def _su_command(words: list[_Word]) -> str | None:
    """The command of ``su … -c CMD`` / ``su … --command=CMD`` (None: a login shell)."""
    for index, word in enumerate(words):
        text = word.text
        if text in ("-c", "--command") or (
            text.startswith("-") and not text.startswith("--") and text.endswith("c")
        ):
            return words[index + 1].text if index + 1 < len(words) else ""
        if text.startswith("--command="):
            return text.split("=", 1)[1]
    return None


def _dash_c(words: list[_Word]) -> str | None:
    for index, word in enumerate(words):
        text = word.text
        if text.startswith("-") and not text.startswith("--") and "c" in text[1:]:
            return words[index + 1].text if index + 1 < len(words) else ""
        if not text.startswith("-"):
            return None
    return None


def _flags(argv: tuple[str, ...]) -> tuple[set[str], list[str]]:
    """Short flags (letters) and long options seen, and the operands."""
    flags: set[str] = set()
    operands: list[str] = []
    end = False
    for arg in argv:
        if end or not arg.startswith("-") or arg == "-":
            operands.append(arg)
        elif arg == "--":
            end = True
        elif arg.startswith("--"):
            flags.add(arg)
        else:
            flags.update(arg[1:])
    return flags, operands


def _dangers(command: SimpleCommand) -> Iterator[str]:
    name, args = command.name, command.argv[1:]
    if name == "rm":
        flags, operands = _flags(args)
        recursive = bool({"r", "R", "--recursive"} & flags)
        targets = [_normal(t) for t in operands]
        hit = sorted({t for t in targets if t in _SYSTEM_DIRS})
        if recursive and hit:
            where = "the root filesystem" if "/" in hit or "/*" in hit else ", ".join(hit)
            yield f"rm -r {' '.join(hit)} deletes {where}"
        elif "--no-preserve-root" in flags:
            yield "rm --no-preserve-root deletes the root filesystem"
    elif name in _MKFS or name.startswith(("mkfs.", "mke2fs")):
        yield f"{name} formats a filesystem"
    elif name == "dd":
        for arg in args:
            if arg.startswith("of=/dev/") and not _HARMLESS_DEVICES.match(arg[3:]):
                yield f"dd writes to the device {arg[3:]}"
    elif name in _SHUTDOWN:
        yield f"{name} stops the server"
    elif name in ("init", "telinit") and args[:1] in (("0",), ("6",)):
        yield f"{name} {args[0]} stops the server"
    elif name == "systemctl" and {"poweroff", "reboot", "halt", "kexec"} & set(args):
        yield (
            "systemctl "
            + next(a for a in args if a in ("poweroff", "reboot", "halt", "kexec"))
            + " stops the server"
        )
    elif name in ("chmod", "chown", "chgrp"):
        flags, operands = _flags(args)
        if {"R", "--recursive"} & flags and any(_normal(t) == "/" for t in operands[1:]):
            yield f"{name} -R on / changes every file of the server"
    elif name in ("shred", "blkdiscard") and any(a.startswith("/dev/") for a in args):
        yield f"{name} destroys the data on a device"


def _normal(path: str) -> str:
    if not path.startswith("/"):
        return path
    if path.rstrip("/") == "":
        return "/"
    if path == "/*":
        return path
    norm = posixpath.normpath(path)
    return "/" if norm in ("//", "/.") else norm
