"""What a command line does with its standard input, for policy (pure; no I/O).

An exec request's command decides nothing about the bytes the client then sends on its
standard input, yet a command may *run* them: ``bash``, ``cat | bash``, ``sudo sh -s``,
``bash /dev/stdin`` read shell commands from it, ``python3 -``, ``perl``, ``psql`` or
``xargs sh -c`` read a program in a language the gateway does not parse. :func:`stdin_use`
tells them apart, on the classified command line (:mod:`jitgate.shell.commands`):

* :attr:`StdinUse.commands` — a shell reads its commands from stdin, and what reaches it
  is exactly what the client sends (nothing but ``cat``/``tee`` before it): each command
  is decided like a line of a piped script (:class:`jitgate.shell.script.ScriptReader`);
* :attr:`StdinUse.uncertain` — stdin is, or may be, a program the gateway cannot decide:
  an interpreter reads its program from it, ``xargs`` makes a shell or interpreter of
  its lines, or a shell reads stdin but another program of the line (``base64 -d``,
  ``curl``, ``ls;``) may stand between, changing what it reads;
* neither — stdin is data (``cat > file``, ``python3 script.py``, ``psql -c …``).

The classified line is flat (the commands in order, without their ``|`` and ``;``), so
this errs on the side of *uncertain*: ``echo ls | bash`` is uncertain although bash does
not read the client's input. A wrapper's inner command (``sudo``, ``env``, ``exec``,
``nice``, ``timeout``, ``nohup``…) is what counts; ``sh -c 'cat | bash'`` is judged on the
commands of its string. A ``<`` redirection from a file gives a program other input than
the client's, except from ``/dev/stdin`` and its aliases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jitgate.shell.commands import CommandLine, SimpleCommand

_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "posh", "fish"})
_SHELL_OPTS_WITH_VALUE = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
_STDIN = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
#: ``cat`` and ``tee`` pass their input on unchanged (with these options at most).
_CAT_ARGS = frozenset({"-", "-u"})
_TEE_OPTS = frozenset({"-a", "-i", "-p", "--append", "--ignore-interrupts"})
_PYTHON = re.compile(r"^(python|pypy)[0-9.]*$")


@dataclass(frozen=True, slots=True)
class _Interpreter:
    """How an interpreter is told its program; without one, it reads it from stdin."""

    inline: str = ""  # letters of short options whose value (or rest) is the program
    program_file: frozenset[str] = frozenset()  # options whose value is a program file
    with_value: str = ""  # letters of other short options that take a value
    long_inline: frozenset[str] = frozenset()
    long_with_value: frozenset[str] = frozenset()
    operands_first: int = 0  # operands before the program (databases, users)
    operand_is_code: bool = False  # the program operand is code (awk, sed), not a file


_DB = _Interpreter(
    inline="c",
    program_file=frozenset({"-f", "--file"}),
    with_value="dhpUvPoTFRLS",
    long_inline=frozenset({"--command"}),
    operands_first=1 << 16,
)
_INTERPRETERS: dict[str, _Interpreter] = {
    "python": _Interpreter(inline="cm", with_value="WXQ"),
    "perl": _Interpreter(inline="eE", with_value="IMmx"),
    "ruby": _Interpreter(inline="e", with_value="IrCEx"),
    "node": _Interpreter(
        inline="ep",
        with_value="r",
        long_inline=frozenset({"--eval", "--print"}),
        long_with_value=frozenset({"--require", "--import", "--loader"}),
    ),
    "php": _Interpreter(inline="rBRE", program_file=frozenset({"-f"}), with_value="cdz"),
    "lua": _Interpreter(inline="e", with_value="l"),
    "tclsh": _Interpreter(),
    "Rscript": _Interpreter(inline="e"),
    "R": _Interpreter(program_file=frozenset({"-f", "--file"})),
    "awk": _Interpreter(program_file=frozenset({"-f"}), with_value="vF", operand_is_code=True),
    "sed": _Interpreter(
        inline="e", program_file=frozenset({"-f"}), with_value="l", operand_is_code=True
    ),
    "psql": _DB,
    "mysql": _Interpreter(
        inline="e", with_value="hPuDS", long_inline=frozenset({"--execute"}), operands_first=1
    ),
    "sqlite3": _Interpreter(operands_first=1, operand_is_code=True),
}
for _alias, _same in (("nodejs", "node"), ("luajit", "lua"), ("wish", "tclsh"),
                      ("gawk", "awk"), ("mawk", "awk"), ("nawk", "awk"), ("mariadb", "mysql"),
                      ("irb", "ruby")):  # fmt: skip
    _INTERPRETERS[_alias] = _INTERPRETERS[_same]


@dataclass(frozen=True, slots=True)
class StdinUse:
    """What a command line does with the client's standard input."""

    commands: bool = False  # a shell reads it as its commands: decide each one
    uncertain: str | None = None  # why it may run it unseen (decide the line as uncertain)


def stdin_use(line: CommandLine) -> StdinUse:
    """How ``line`` treats its standard input (see the module docstring)."""
    if line.unknown:
        return StdinUse()
    shell = ""  # the first shell that reads its commands from stdin
    before: list[str] = []  # programs before it that may change what it reads
    for command in line.commands:
        name = _name(command)
        if "xargs" in command.wrappers and (name in _SHELLS or _interpreter(name)):
            return StdinUse(uncertain=f"xargs runs its input with {name}")
        if _container(command, name):
            continue
        reads = _reads_stdin(command)
        if reads and name in _SHELLS and _shell_mode(_args(command)) == "stdin":
            shell = shell or name
            continue
        interpreter = _interpreter(name)
        if reads and interpreter is not None and _program_from_stdin(command, interpreter):
            return StdinUse(uncertain=f"{name} reads its program from standard input")
        if reads and _runs_input(name, _args(command)):
            return StdinUse(uncertain=f"{name} runs its input as commands")
        if not shell and not (reads and _pass_through(name, _args(command))):
            before.append(name)
    if not shell:
        return StdinUse()
    if before:
        return StdinUse(uncertain=f"{before[0]} may change what {shell} reads from standard input")
    return StdinUse(commands=True)


def _name(command: SimpleCommand) -> str:
    """The program's name (``busybox sh`` is ``sh``)."""
    if command.name == "busybox" and len(command.argv) > 1:
        return command.argv[1]
    return command.name


def _args(command: SimpleCommand) -> tuple[str, ...]:
    return command.argv[2:] if command.name == "busybox" else command.argv[1:]


def _interpreter(name: str) -> _Interpreter | None:
    return _INTERPRETERS["python"] if _PYTHON.match(name) else _INTERPRETERS.get(name)


def _reads_stdin(command: SimpleCommand) -> bool:
    """Its standard input is the line's (no ``<`` from a file, a here-document or string)."""
    for op, target in command.redirects:
        if op == "<&" and target == "0":
            continue
        if "<" in op and not (op == "<" and target in _STDIN):
            return False
    return True


def _container(command: SimpleCommand, name: str) -> bool:
    """``sh -c STRING`` and ``eval``: their commands are the line's following ones."""
    return name == "eval" or (name in _SHELLS and _shell_mode(_args(command)) == "-c")


def _pass_through(name: str, args: tuple[str, ...]) -> bool:
    if name == "cat":
        return all(arg in _CAT_ARGS for arg in args)
    if name == "tee":
        return all(not arg.startswith("-") or arg in _TEE_OPTS for arg in args)
    return False


def _runs_input(name: str, args: tuple[str, ...]) -> bool:
    """``at``, ``batch``, ``parallel``, ``crontab``, given their commands on stdin."""
    if name in ("at", "batch"):
        return not {"-f", "-l", "-r", "-d", "-c"} & set(args)
    if name == "parallel":
        return not {":::", "::::"} & set(args)
    return name == "crontab" and (not args or "-" in args)


def _shell_mode(args: tuple[str, ...]) -> str:
    """Where a shell takes its commands: ``-c`` (a string), ``file`` or ``stdin``
    (no ``-c`` and no script file, or ``-s``, or a script that is stdin)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-", "--"):
            script = args[i + 1] if arg == "--" and i + 1 < len(args) else "-"
            return "stdin" if script in _STDIN else "file"
        if arg in _SHELL_OPTS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith(("-", "+")) and not arg.startswith("--"):
            if "c" in arg[1:]:
                return "-c"
            if "s" in arg[1:]:
                return "stdin"  # the words after -s are positional parameters
        elif not arg.startswith("--"):
            return "stdin" if arg in _STDIN else "file"
        i += 1
    return "stdin"


def _program_from_stdin(command: SimpleCommand, how: _Interpreter) -> bool:
    """Does the interpreter read its program from stdin (no inline code, no file)?"""
    args = _args(command)
    operands = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            operand = args[i + 1] if arg == "--" and i + 1 < len(args) else arg
            if arg == "--" and i + 1 >= len(args):
                break
            if operands < how.operands_first:  # a database or a user, not the program
                operands += 1
                i += 2 if arg == "--" else 1
                continue
            return not how.operand_is_code and operand in _STDIN
        if arg in how.program_file:
            return i + 1 >= len(args) or args[i + 1] in _STDIN
        if arg.startswith("--"):
            option, _, value = arg.partition("=")
            if option in how.long_inline:
                return False
            if option in how.program_file:
                return value in _STDIN
            i += 2 if arg in how.long_with_value else 1
            continue
        letters = arg[1:]
        if letters[0] in how.with_value:
            i += 1 if len(letters) > 1 else 2
            continue
        if letters[0] in how.inline or letters[-1] in how.inline:
            return False
        i += 1
    # No program given: it is read from stdin (awk and sed without one only complain).
    return not (how.operand_is_code and how.operands_first == 0)
