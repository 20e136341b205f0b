"""Shell command lines for policy: classification (exec) and reconstruction (PTY input)."""

from jitgate.shell.commands import CommandLine, SimpleCommand, classify
from jitgate.shell.line import LineEditor, TypedLine

__all__ = ["CommandLine", "LineEditor", "SimpleCommand", "TypedLine", "classify"]
