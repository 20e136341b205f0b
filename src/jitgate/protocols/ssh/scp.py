"""Legacy scp (``scp -O``, the rcp protocol) through the gateway: which execs are scp, and
each file decided as it goes by (sans-IO).

A legacy scp client runs ``scp -t PATH`` (upload: the target is the *sink*) or
``scp -f PATH`` (download: the target is the *source*) on the target and speaks the rcp
protocol over the channel. Only the plain invocation an OpenSSH client sends is taken for
scp (:func:`parse_scp`): ``scp``, its own flags (``-v -r -p -d -q``), ``-t`` or ``-f``,
an optional ``--`` and one literal path, as the whole command line. Anything else (other
flags, a second command, redirections, ``$``/backquote, globs outside the last component
of a download) is an ordinary exec, decided by exec policy.

The source sends records, each a line: ``C<mode> <size> <name>`` (a file, followed by
``size`` bytes and a status byte once the sink accepted it), ``D<mode> 0 <name>`` (enter a
directory), ``E`` (leave it), ``T…`` (times); ``\\x01``/``\\x02`` lines are warnings and
errors. The sink answers every record, and every file's data, with ``\\0`` or an error
line. :class:`SCPInspector` decides each ``C`` and ``D`` on its full path (the command's
path, the directories entered, the name; normalised like SFTP paths):

* upload: a denied file or directory is not forwarded; the client gets a warning
  (``\\x01jitgate: …``), which makes it skip that file (or directory) and go on;
* download: a denied file or directory is accepted on the client's behalf and its data
  (the whole directory, for ``D``) dropped; the client gets the warning instead.
"""

from __future__ import annotations

import posixpath
import shlex
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from jitgate.protocols.ssh.sftp import normalize
from jitgate.shell.commands import CommandLine

MAX_RECORD = 8192
_SCP_FLAGS = frozenset("vrpdq")
_GLOB = frozenset("*?[")
_NOT_LITERAL = frozenset("$`\\\n")


class SCPProtocolError(Exception):
    """The peer broke the rcp protocol."""


@dataclass(frozen=True, slots=True)
class SCPRequest:
    path: str  # as given
    upload: bool  # -t: the client writes; -f: the client reads
    recursive: bool


def parse_scp(line: CommandLine) -> SCPRequest | None:
    """The plain ``scp -t``/``scp -f`` an scp client runs, or None (an ordinary exec)."""
    if line.unknown or line.dynamic or len(line.commands) != 1:
        return None
    command = line.commands[0]
    if command.name != "scp" or command.wrappers or command.redirects or command.argv[0] != "scp":
        return None
    try:  # nothing but these words: no operator, no substitution
        words = shlex.split(line.text)
    except ValueError:
        return None
    if words != list(command.argv):
        return None
    mode: str | None = None
    flags: set[str] = set()
    operands: list[str] = []
    args = list(command.argv[1:])
    while args:
        arg = args.pop(0)
        if arg == "--":
            operands += args
            break
        if arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in "tf" and mode is None:
                    mode = letter
                elif letter in _SCP_FLAGS:
                    flags.add(letter)
                else:
                    return None
            continue
        operands.append(arg)
    if mode is None or len(operands) != 1:
        return None
    path = operands[0]
    if not path or _NOT_LITERAL & set(path):
        return None
    head = posixpath.dirname(path)
    if _GLOB & set(head) or (mode == "t" and _GLOB & set(path)):
        return None
    return SCPRequest(path, mode == "t", "r" in flags)


#: ``decide(path, write)``: None to allow, or the reason it is denied.
Decide = Callable[[str, bool], str | None]


@dataclass(slots=True)
class SCPInspector:
    decide: Decide
    request: SCPRequest
    home: str | None = None
    _source: bytearray = field(default_factory=bytearray)  # unparsed bytes of the source
    _sink: bytearray = field(default_factory=bytearray)
    _data_left: int = 0  # bytes of a file's data (and its status byte) still to pass
    _drop: bool = False  # the data passing is a denied download's: dropped, acked here
    _waiting: bool = False  # a file header went on: its data waits for the sink's answer
    _answers: deque[tuple[str, str, int]] = field(default_factory=deque)  # what each answers
    _dirs: list[str] = field(default_factory=list)
    _skip: int = 0  # depth inside a denied directory of a download

    def __post_init__(self) -> None:
        self._answers.append(("start", "", 0))
        base = normalize(self.request.path, self.home) or self.request.path
        # Records name entries of the directory the path is in (a download of a file or
        # of a glob), or of the path itself (an upload to a directory).
        self._dirs = [base if self.request.upload else posixpath.dirname(base) or "/"]

    def path(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(*self._dirs, name))

    # ------------------------------------------------------------ the source's side

    def from_source(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes of the source: (to send on to the sink, to answer the source with)."""
        self._source += data
        return self._run()

    def _run(self) -> tuple[bytes, bytes]:
        to_sink: list[bytes] = []
        to_source: list[bytes] = []
        buf = self._source
        while buf and not self._waiting:
            if self._data_left:
                n = min(self._data_left, len(buf))
                if not self._drop:
                    to_sink.append(bytes(buf[:n]))
                del buf[:n]
                self._data_left -= n
                if not self._data_left:
                    if self._drop:
                        to_source.append(b"\0")  # the data's answer, for the client
                        self._drop = False
                    else:
                        self._answers.append(("data", "", 0))
                continue
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_RECORD:
                    raise SCPProtocolError("scp record too long")
                break
            record = bytes(buf[: end + 1])
            del buf[: end + 1]
            self._record(record, to_sink, to_source)
        return b"".join(to_sink), b"".join(to_source)

    def _record(self, record: bytes, to_sink: list[bytes], to_source: list[bytes]) -> None:
        kind = record[:1]
        if kind in (b"\x01", b"\x02"):  # the source's own warning or error
            to_sink.append(record)
            return
        if kind not in (b"C", b"D", b"E", b"T"):
            raise SCPProtocolError(f"unexpected scp record {record[:1]!r}")
        if self._skip:  # inside a denied directory of a download: answered here
            to_source.append(b"\0")
            if kind == b"C":
                self._data_left, self._drop = _size(record) + 1, True
            elif kind == b"D":
                self._skip += 1
            elif kind == b"E":
                self._skip -= 1
            return
        if kind in (b"E", b"T"):
            if kind == b"E" and len(self._dirs) > 1:
                self._dirs.pop()
            to_sink.append(record)
            self._answers.append(("record", "", 0))
            return
        size, name = _size(record), _name(record)
        path = self.path(name)
        reason = self.decide(path, self.request.upload)
        if reason is None:
            to_sink.append(record)
            self._answers.append(("C" if kind == b"C" else "D", name, size))
            self._waiting = kind == b"C"
            return
        warning = _warning(f"jitgate: {path}: {reason}")
        if self.request.upload:  # the client skips what it is warned of
            to_source.append(warning)
            return
        to_source.append(b"\0")  # download: accepted here, dropped, the client warned
        to_sink.append(warning)
        if kind == b"C":
            self._data_left, self._drop = size + 1, True
        else:
            self._skip = 1

    # -------------------------------------------------------------- the sink's side

    def from_sink(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes of the sink: (to send on to the source, to send on to the sink after
        source bytes that waited for this answer)."""
        self._sink += data
        out = bytearray()
        buf = self._sink
        while buf:
            if buf[0] == 0:
                answer, ok = b"\0", True
            else:
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > MAX_RECORD:
                        raise SCPProtocolError("scp answer too long")
                    break
                answer, ok = bytes(buf[: end + 1]), False
            del buf[: len(answer)]
            out += answer
            what, name, size = self._answers.popleft() if self._answers else ("", "", 0)
            if what == "C":
                self._waiting = False
                self._data_left = size + 1 if ok else 0
            elif what == "D" and ok:
                self._dirs.append(name)
        to_sink, to_source = self._run() if not self._waiting else (b"", b"")
        return bytes(out) + to_source, to_sink


def _size(record: bytes) -> int:
    parts = record[1:].split(b" ", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        raise SCPProtocolError("malformed scp record")
    return int(parts[1])


def _name(record: bytes) -> str:
    name = record[1:].rstrip(b"\n").split(b" ", 2)[2].decode("utf-8", "surrogateescape")
    if not name or "/" in name or name in (".", ".."):
        raise SCPProtocolError(f"unexpected file name in scp record: {name[:100]!r}")
    return name


def _warning(message: str) -> bytes:
    return b"\x01" + message.replace("\n", " ").encode("utf-8", "replace")[:1024] + b"\n"
