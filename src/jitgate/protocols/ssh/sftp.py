"""Inspecting the SFTP subsystem in flight (sans-IO): file operations for policy and the record.

SFTP (draft-ietf-secsh-filexfer-02, version 3, which OpenSSH speaks) runs inside a
session channel as length-prefixed packets: ``uint32 length, byte type, uint32 id, …``.
:class:`SFTPInspector` is fed the bytes of each direction and gives back the bytes to
forward. Client requests that name a path are put to a ``decide`` callback first:

* reads: ``open`` without write flags, ``opendir``, ``readlink``, ``statvfs``;
* writes: ``open`` with WRITE/APPEND/CREAT/TRUNC/EXCL, ``remove``, ``mkdir``, ``rmdir``,
  ``rename`` (both paths), ``setstat``/``fsetstat``, ``symlink``, ``posix-rename``,
  ``hardlink``, ``lsetstat``, ``copy-data``, and any extension it does not know.

A denied request is not forwarded; the client gets ``SSH_FX_PERMISSION_DENIED`` with
the reason, and the subsystem stays usable. The callback records its decision (the caller
writes it before it forwards the request: :func:`request_event` is its event); the
inspector's own events are the outcomes: each decided operation's ``status`` when the
server answers it, and each handle's totals of bytes read and written when it is closed.
Metadata requests (``stat``, ``lstat``, ``realpath``, ``readdir`` on an allowed
directory) pass unrecorded.

Paths are normalised before they are decided (:func:`normalize`): a relative path is taken
from the user's home directory on the target (``home``, which the session asks the target
for), ``.``, ``..`` and repeated slashes are resolved, so ``/etc/../etc//shadow`` and
``../../etc/shadow`` are both ``/etc/shadow`` to policy and in the record (the path as
sent is kept beside it as ``requested``). With the home directory unknown, a relative path
that climbs out of it is refused.

Symbolic links are resolved on the target when ``resolve_links`` is set: a request naming
a path stops the inspector before it is decided, with :attr:`SFTPInspector.needs` saying
which paths the caller must look up (each a :data:`Lookup`: the path, and whether its last
component is followed, as ``open`` does, or is the object itself, as ``remove`` and
``symlink`` do); the caller gives their real paths to :meth:`SFTPInspector.found` and
feeds on. So ``/tmp/x``, a link to ``/etc/shadow``, is ``/etc/shadow`` to policy and in the
record, and a link created under an allowed directory reaches nothing it does not allow.
Links change: the caller looks a path up only once every request sent before it has been
answered (:attr:`SFTPInspector.settled`), so a ``symlink`` still in flight cannot change
what the next ``open`` meets; each lookup serves one request. Another session changing a
link between the lookup and the request is beyond any proxy's sight.
"""

from __future__ import annotations

import dataclasses
import posixpath
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jitgate.policy.types import Decision

UNRESOLVED_HOME = (
    "a relative path that leaves the home directory cannot be checked "
    "(the target did not tell its home directory)"
)

INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK = 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

FX_OK, FX_PERMISSION_DENIED, FX_FAILURE = 0, 3, 4
MAX_OUTSTANDING = 16384  # requests awaiting a reply, and open handles, per channel
_WRITE_FLAGS = 0x02 | 0x04 | 0x08 | 0x10 | 0x20  # WRITE APPEND CREAT TRUNC EXCL

_READ_EXTENSIONS = {
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "home-directory",
    "users-groups-by-id@openssh.com",
    "fsync@openssh.com",
    "check-file-name",
    "check-file-handle",
}
_TWO_PATH_WRITES = {"posix-rename@openssh.com", "hardlink@openssh.com"}

_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">IBI")


class SFTPProtocolError(Exception):
    """The peer broke SFTP framing (or sent a packet over the size limit)."""


@dataclass(frozen=True, slots=True)
class FileOperation:
    op: str  # open, opendir, remove, mkdir, rmdir, rename, setstat, symlink, …
    paths: tuple[str, ...]  # normalised (see normalize)
    write: bool
    flags: int = 0
    requested: tuple[str, ...] = ()  # the paths as sent, when normalising changed them
    unresolved: str = ""  # why a path could not be made absolute or real: refuse it


def normalize(path: str, home: str | None) -> str | None:
    """``path`` made absolute (relative ones from ``home``) with ``.``, ``..`` and ``//``
    resolved; None when it cannot be (relative, climbing out of an unknown home)."""
    if not path.startswith("/"):
        if home:
            path = home.rstrip("/") + "/" + path
        else:
            relative = posixpath.normpath(path or ".")
            if relative == ".." or relative.startswith("../"):
                return None
            return "~" if relative == "." else "~/" + relative
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def file_operation(
    op: str, paths: tuple[str, ...], write: bool, home: str | None, flags: int = 0
) -> FileOperation:
    """A file operation on ``paths`` as sent, with the paths normalised."""
    normal = tuple(normalize(p, home) for p in paths)
    unresolved = UNRESOLVED_HOME if any(n is None for n in normal) else ""
    decided = tuple(n if n is not None else p for n, p in zip(normal, paths, strict=True))
    requested = paths if decided != paths else ()
    return FileOperation(op, decided, write, flags, requested, unresolved)


#: ``decide(operation)`` returns None to allow, or the reason it is denied.
Decide = Callable[[FileOperation], str | None]
#: A path to resolve on the target, and whether its last component is followed if a link.
Lookup = tuple[str, bool]
#: Operations on the object a path names, not on what a link there points to.
_NO_FOLLOW = frozenset({"readlink", "remove", "rmdir", "mkdir", "rename", "posix-rename",
                        "hardlink", "lsetstat"})  # fmt: skip


def _lookups(op: FileOperation) -> tuple[Lookup, ...]:
    if op.op == "fsetstat":  # a handle's path is the real one it was opened on
        return ()
    if op.op == "symlink":  # OpenSSH's order: the target, then the link
        return (op.paths[0], True), (op.paths[1], False)
    return tuple((path, op.op not in _NO_FOLLOW) for path in op.paths)


def _resolved(op: FileOperation, real: tuple[str | None, ...]) -> FileOperation:
    """``op`` on the real paths (the paths as sent kept in ``requested``)."""
    if any(path is None for path in real):
        return dataclasses.replace(op, unresolved="the target could not resolve the path")
    paths = tuple(path for path in real if path is not None)
    sent = op.requested or op.paths
    return dataclasses.replace(op, paths=paths, requested=sent if sent != paths else ())


@dataclass(slots=True)
class _Handle:
    path: str
    write: bool
    bytes_read: int = 0
    bytes_written: int = 0


@dataclass(slots=True)
class _Pending:
    operation: FileOperation | None = None
    handle: bytes | None = None  # READ or CLOSE on this handle
    close: bool = False


@dataclass(slots=True)
class SFTPInspector:
    decide: Decide
    max_packet: int = 1 << 20
    home: str | None = None  # the user's home directory on the target (relative paths)
    events: list[dict[str, Any]] = field(default_factory=list)
    _up: bytearray = field(default_factory=bytearray)
    _down: bytearray = field(default_factory=bytearray)
    _handles: dict[bytes, _Handle] = field(default_factory=dict)
    _pending: dict[int, _Pending] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    resolve_links: bool = False
    needs: tuple[Lookup, ...] = ()  # to look up before the next request is decided
    real: dict[Lookup, str | None] = field(default_factory=dict)  # for one request

    @property
    def settled(self) -> bool:
        """Every request forwarded so far has been answered."""
        return not self._pending

    def found(self, real: dict[Lookup, str | None]) -> None:
        """The real paths of :attr:`needs` (None: the target could not resolve it)."""
        self.real = real
        self.needs = ()

    # -------------------------------------------------------------- client → server

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        """Returns (bytes to forward to the server, replies to send back to the client)."""
        buf = self._up
        buf += data
        forward: list[memoryview] = []
        replies: list[bytes] = []
        view = memoryview(buf)
        pos = run_start = 0
        try:
            while len(buf) - pos >= 4:
                (length,) = _U32.unpack_from(buf, pos)
                if length < 1 or length > self.max_packet:
                    raise SFTPProtocolError(f"SFTP packet of {length} bytes")
                end = pos + 4 + length
                if end > len(buf):
                    break
                with view[pos:end] as packet:  # released here, whoever kept a reference
                    denial = self._request(packet)
                if self.needs:  # the caller looks paths up, then feeds on from here
                    break
                if denial is not None:
                    if pos > run_start:
                        forward.append(view[run_start:pos])
                    replies.append(denial)
                    run_start = end
                pos = end
            if pos > run_start:
                forward.append(view[run_start:pos])
            out = b"".join(forward)
        finally:
            forward.clear()
            view.release()
        del buf[:pos]
        return out, b"".join(replies)

    def _request(self, packet: memoryview) -> bytes | None:
        ptype = packet[4]
        if ptype == INIT or len(packet) < 9:
            return None
        (req_id,) = _U32.unpack_from(packet, 5)
        if ptype == WRITE:
            handle, at = _string(packet, 9)
            h = self._handles.get(handle)
            if h is not None and at + 12 <= len(packet):
                (size,) = _U32.unpack_from(packet, at + 8)
                h.bytes_written += size
                self.bytes_written += size
            return None
        if ptype in (READ, CLOSE):
            if len(self._pending) >= MAX_OUTSTANDING:
                raise SFTPProtocolError("too many outstanding SFTP requests")
            handle, _ = _string(packet, 9)
            self._pending[req_id] = _Pending(handle=handle, close=ptype == CLOSE)
            return None
        if ptype == FSETSTAT:
            handle, _ = _string(packet, 9)
            h = self._handles.get(handle)
            operation: FileOperation | None = FileOperation(
                "fsetstat", (h.path,) if h is not None else (), True
            )
        else:
            operation = self._operation(ptype, packet)
        if operation is None:
            return None
        lookups = _lookups(operation) if self.resolve_links and not operation.unresolved else ()
        if lookups:
            missing = tuple(lookup for lookup in lookups if lookup not in self.real)
            if missing:
                self.needs = missing
                return None
            operation = _resolved(operation, tuple(self.real[lookup] for lookup in lookups))
            self.real.clear()
        if len(self._pending) >= MAX_OUTSTANDING:
            raise SFTPProtocolError("too many outstanding SFTP requests")
        reason = self.decide(operation)
        if reason is not None:
            return _status(req_id, FX_PERMISSION_DENIED, f"jitgate: {reason}")
        self._pending[req_id] = _Pending(operation=operation)
        return None

    def _operation(self, ptype: int, p: memoryview) -> FileOperation | None:
        home = self.home
        if ptype == OPEN:
            path, at = _text(p, 9)
            (flags,) = _U32.unpack_from(p, at) if at + 4 <= len(p) else (0,)
            return file_operation("open", (path,), bool(flags & _WRITE_FLAGS), home, flags)
        if ptype in (OPENDIR, READLINK):
            path, _ = _text(p, 9)
            name = "opendir" if ptype == OPENDIR else "readlink"
            return file_operation(name, (path,), False, home)
        if ptype in (REMOVE, MKDIR, RMDIR, SETSTAT):
            path, _ = _text(p, 9)
            name = {REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir", SETSTAT: "setstat"}[ptype]
            return file_operation(name, (path,), True, home)
        if ptype == RENAME:
            first, at = _text(p, 9)
            second, _ = _text(p, at)
            return file_operation("rename", (first, second), True, home)
        if ptype == SYMLINK:  # OpenSSH's order: the target, then the link
            target, at = _text(p, 9)
            link, _ = _text(p, at)
            op = file_operation("symlink", (target, link), True, home)
            if not target.startswith("/") and op.paths[1].startswith("/"):
                # a relative target is relative to the link's directory, not to home
                where = posixpath.dirname(op.paths[1])
                op = dataclasses.replace(
                    op,
                    paths=(normalize(f"{where}/{target}", home) or target, op.paths[1]),
                    requested=(target, link),
                )
            return op
        if ptype == EXTENDED:
            name, at = _text(p, 9)
            if name in _READ_EXTENSIONS:
                if name == "statvfs@openssh.com":
                    path, _ = _text(p, at)
                    return file_operation("statvfs", (path,), False, home)
                return None
            if name in _TWO_PATH_WRITES:
                first, at = _text(p, at)
                second, _ = _text(p, at)
                return file_operation(name.split("@")[0], (first, second), True, home)
            if name == "lsetstat@openssh.com":
                path, _ = _text(p, at)
                return file_operation("lsetstat", (path,), True, home)
            return FileOperation(name[:64], (), True)  # unknown: treated as a write
        return None

    # -------------------------------------------------------------- server → client

    def from_server(self, data: bytes) -> None:
        """Observe the server's replies (they are forwarded unchanged by the caller)."""
        buf = self._down
        buf += data
        pos = 0
        while len(buf) - pos >= 9:
            (length, ptype, req_id) = _HEAD.unpack_from(buf, pos)
            if length < 1 or length > self.max_packet + 1024:
                raise SFTPProtocolError(f"SFTP reply of {length} bytes")
            end = pos + 4 + length
            if end > len(buf):
                break
            if ptype != VERSION and req_id in self._pending:
                with memoryview(buf) as view:
                    self._reply(ptype, req_id, view[pos:end])
            pos = end
        del buf[:pos]

    def _reply(self, ptype: int, req_id: int, packet: memoryview) -> None:
        pending = self._pending.pop(req_id, None)
        if pending is None:
            return
        if pending.operation is not None:
            op = pending.operation
            if ptype == HANDLE and op.op in ("open", "opendir"):
                handle, _ = _string(packet, 9)
                if op.op == "open" and len(self._handles) < MAX_OUTSTANDING:
                    self._handles[bytes(handle)] = _Handle(op.paths[0], op.write)
                self.events.append(_outcome(op, "ok"))
            elif ptype == STATUS:
                (code,) = _U32.unpack_from(packet, 9)
                message, _ = _text(packet, 13) if code else ("", 0)
                self.events.append(_outcome(op, "ok" if code == FX_OK else message or str(code)))
            else:
                self.events.append(_outcome(op, "ok"))
            return
        if pending.handle is not None:
            h = self._handles.get(pending.handle)
            if ptype == DATA and h is not None and len(packet) >= 13:
                (size,) = _U32.unpack_from(packet, 9)
                h.bytes_read += size
                self.bytes_read += size
            elif ptype == STATUS and h is not None and pending.close:
                del self._handles[pending.handle]
                self.events.append(
                    {
                        "op": "close",
                        "path": h.path,
                        "mode": "write" if h.write else "read",
                        "bytes_read": h.bytes_read,
                        "bytes_written": h.bytes_written,
                    }
                )

    def drain_events(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


def _string(p: memoryview, at: int) -> tuple[bytes, int]:
    if at + 4 > len(p):
        raise SFTPProtocolError("truncated SFTP string")
    (n,) = _U32.unpack_from(p, at)
    end = at + 4 + n
    if end > len(p):
        raise SFTPProtocolError("truncated SFTP string")
    return bytes(p[at + 4 : end]), end


def _text(p: memoryview, at: int) -> tuple[str, int]:
    raw, end = _string(p, at)
    return raw.decode("utf-8", "surrogateescape"), end


def _status(req_id: int, code: int, message: str) -> bytes:
    msg = message.encode("utf-8", "replace")[:1024]
    body = struct.pack(">BII", STATUS, req_id, code) + _U32.pack(len(msg)) + msg + _U32.pack(0)
    return _U32.pack(len(body)) + body


def _operation_fields(op: FileOperation) -> dict[str, Any]:
    event: dict[str, Any] = {
        "op": op.op,
        "path": op.paths[0] if op.paths else "",
        "mode": "write" if op.write else "read",
    }
    if len(op.paths) > 1:
        event["to"] = op.paths[1]
    if op.requested:
        event["requested"] = list(op.requested)
    return event


def request_event(op: FileOperation, decision: Decision) -> dict[str, Any]:
    """The event of a decided file operation (written before it is forwarded)."""
    event = _operation_fields(op)
    event["decision"] = decision.outcome.value
    event["policies"] = list(decision.policies)
    if op.flags:
        event["flags"] = op.flags
    if decision.reason:
        event["reason"] = decision.reason
    return event


def _outcome(op: FileOperation, status: str) -> dict[str, Any]:
    event = _operation_fields(op)
    event["status"] = status
    return event
