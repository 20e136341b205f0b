"""The SFTP inspector (sans-IO): decisions per file operation, denials answered in SFTP."""

from __future__ import annotations

import struct
import sys

from hypothesis import given
from hypothesis import strategies as st

from jitgate.policy.types import Decision
from jitgate.protocols.ssh import sftp as s
from jitgate.protocols.ssh.sftp import FileOperation, SFTPInspector


def packet(ptype: int, *fields: bytes | int, req_id: int | None = 1) -> bytes:
    body = bytes([ptype]) + (struct.pack(">I", req_id) if req_id is not None else b"")
    for f in fields:
        body += struct.pack(">I", f) if isinstance(f, int) else struct.pack(">I", len(f)) + f
    return struct.pack(">I", len(body)) + body


def deny_writes_under_etc(op: FileOperation) -> str | None:
    if op.write and any(p.startswith("/etc/") for p in op.paths):
        return "/etc is read-only"
    return None


def test_allowed_requests_pass_through_unchanged_even_when_split() -> None:
    inspector = SFTPInspector(deny_writes_under_etc)
    data = packet(s.INIT, 3, req_id=None) + packet(s.OPEN, b"/tmp/a", 0x1A, 0, req_id=7)
    forwarded = b""
    for i in range(len(data)):
        out, replies = inspector.from_client(data[i : i + 1])
        forwarded += out
        assert replies == b""
    assert forwarded == data


def test_denied_write_gets_permission_denied_and_is_not_forwarded() -> None:
    inspector = SFTPInspector(deny_writes_under_etc)
    ok = packet(s.STAT, b"/etc/passwd", req_id=1)
    bad = packet(s.OPEN, b"/etc/passwd", 0x1A, 0, req_id=2)
    after = packet(s.REMOVE, b"/tmp/x", req_id=3)
    out, replies = inspector.from_client(ok + bad + after)
    assert out == ok + after
    _length, ptype, req_id, code = struct.unpack_from(">IBII", replies)
    assert (ptype, req_id, code) == (s.STATUS, 2, s.FX_PERMISSION_DENIED)
    assert b"/etc is read-only" in replies
    assert inspector.drain_events() == []  # the decision is the callback's to record
    op = FileOperation("open", ("/etc/passwd",), True, 0x1A)
    assert s.request_event(op, Decision.deny("/etc is read-only", "ro")) == {
        "op": "open", "path": "/etc/passwd", "mode": "write", "decision": "deny",
        "policies": ["ro"], "flags": 0x1A, "reason": "/etc is read-only",
    }  # fmt: skip


def test_rename_checks_both_paths_and_reads_are_allowed() -> None:
    inspector = SFTPInspector(deny_writes_under_etc)
    _, replies = inspector.from_client(packet(s.RENAME, b"/tmp/a", b"/etc/cron.d/x", req_id=4))
    assert replies
    out, replies = inspector.from_client(packet(s.OPEN, b"/etc/hosts", 1, 0, req_id=5))
    assert out and not replies


def test_unknown_extensions_count_as_writes() -> None:
    seen: list[FileOperation] = []

    def decide(op: FileOperation) -> str | None:
        seen.append(op)
        return "no"

    inspector = SFTPInspector(decide)
    _, replies = inspector.from_client(packet(s.EXTENDED, b"frobnicate@example.com", req_id=9))
    assert replies and seen[0].write


def test_bytes_are_counted_per_handle_and_reported_on_close() -> None:
    inspector = SFTPInspector(lambda op: None)
    inspector.from_client(packet(s.OPEN, b"/tmp/f", 0x1A, 0, req_id=1))
    inspector.from_server(packet(s.HANDLE, b"h1", req_id=1))
    inspector.from_client(packet(s.WRITE, b"h1", 0, 0, b"x" * 1000, req_id=2))
    inspector.from_client(packet(s.READ, b"h1", 0, 0, 100, req_id=3))
    reply = packet(s.DATA, b"y" * 100, req_id=3)
    inspector.from_server(reply[:5])
    inspector.from_server(reply[5:])
    inspector.from_client(packet(s.CLOSE, b"h1", req_id=4))
    inspector.from_server(packet(s.STATUS, 0, b"", b"", req_id=4))
    events = inspector.drain_events()
    assert events[0] == {"op": "open", "path": "/tmp/f", "mode": "write", "status": "ok"}
    assert events[-1] == {
        "op": "close", "path": "/tmp/f", "mode": "write", "bytes_read": 100,
        "bytes_written": 1000,
    }  # fmt: skip


def test_oversized_packets_are_a_protocol_error() -> None:
    inspector = SFTPInspector(lambda op: None, max_packet=1024)
    try:
        inspector.from_client(struct.pack(">IB", 5000, s.WRITE))
    except s.SFTPProtocolError:
        return
    raise AssertionError("no error")


@given(st.binary(max_size=400))
def test_garbage_never_crashes_otherwise(data: bytes) -> None:
    inspector = SFTPInspector(lambda op: None, max_packet=1 << 16)
    try:
        inspector.from_client(data)
        inspector.from_server(data)
    except s.SFTPProtocolError:
        pass


def test_a_decision_that_keeps_the_callers_frames_alive_does_not_pin_the_buffer() -> None:
    kept: list[object] = []

    def decide(op: FileOperation) -> str | None:
        kept.append(sys._getframe(1))  # as the traceback of a stored write error does
        return "no"

    inspector = SFTPInspector(decide)
    second = packet(s.STAT, b"/y", req_id=2)
    inspector.from_client(packet(s.REMOVE, b"/x", req_id=1) + second[:5])
    out, _ = inspector.from_client(second[5:])  # the receive buffer is resized
    assert out == second


def test_paths_are_normalised_before_they_are_decided() -> None:
    seen: list[FileOperation] = []

    def decide(op: FileOperation) -> str | None:
        seen.append(op)
        return deny_writes_under_etc(op)

    inspector = SFTPInspector(decide, home="/home/alice")
    requests = [
        packet(s.OPEN, b"/etc/../etc/shadow", 0x1A, 0, req_id=1),
        packet(s.OPEN, b"//etc//cron.d/./x", 0x1A, 0, req_id=2),
        packet(s.REMOVE, b"../../etc/passwd", req_id=3),
        packet(s.OPEN, b"notes.txt", 0x1A, 0, req_id=4),
        packet(s.RENAME, b"a", b"/tmp/../etc/hosts", req_id=5),
    ]
    out, replies = inspector.from_client(b"".join(requests))
    assert out == requests[3]
    assert [op.paths for op in seen] == [
        ("/etc/shadow",), ("/etc/cron.d/x",), ("/etc/passwd",),
        ("/home/alice/notes.txt",), ("/home/alice/a", "/etc/hosts"),
    ]  # fmt: skip
    assert replies.count(b"/etc is read-only") == 4
    event = s.request_event(seen[0], Decision.deny("no", "ro"))
    assert (event["path"], event["requested"]) == ("/etc/shadow", ["/etc/../etc/shadow"])


def test_relative_paths_with_the_home_directory_unknown() -> None:
    assert s.normalize("a/../b", None) == "~/b"
    assert s.normalize(".", None) == "~"
    assert s.normalize("../etc/passwd", None) is None
    assert s.normalize("a/../../x", None) is None
    assert s.normalize("/../../etc", None) == "/etc"
    op = s.file_operation("open", ("../x",), False, None)
    assert op.unresolved and op.paths == ("../x",)


def test_paths_are_resolved_before_a_request_is_decided_and_the_rest_waits() -> None:
    seen: list[FileOperation] = []

    def decide(op: FileOperation) -> str | None:
        seen.append(op)
        return deny_writes_under_etc(op) or ("no shadow" if "/etc/shadow" in op.paths else None)

    inspector = SFTPInspector(decide, resolve_links=True, home="/home/u")
    read = packet(s.OPEN, b"x", 0x01, 0, req_id=1)  # home/x, a link to /etc/shadow
    after = packet(s.REMOVE, b"/tmp/d/f", req_id=2)
    assert inspector.from_client(read + after) == (b"", b"")
    assert inspector.needs == (("/home/u/x", True),)  # open follows the last link
    inspector.found({("/home/u/x", True): "/etc/shadow"})
    out, replies = inspector.from_client(b"")
    assert out == b"" and b"no shadow" in replies
    assert seen[-1].paths == ("/etc/shadow",) and seen[-1].requested == ("x",)
    assert inspector.needs == (("/tmp/d/f", False),)  # remove acts on the link itself
    inspector.found({("/tmp/d/f", False): "/etc/f"})  # /tmp/d is a link to /etc
    out, replies = inspector.from_client(b"")
    assert out == b"" and b"/etc is read-only" in replies
    assert inspector.settled and not inspector.needs
    # symlink (OpenSSH's order: target, link): a relative target is from the link's directory
    link = packet(s.SYMLINK, b"../etc/passwd", b"/tmp/l", req_id=3)
    inspector.from_client(link)
    assert inspector.needs == (("/etc/passwd", True), ("/tmp/l", False))
    inspector.found({("/etc/passwd", True): "/etc/passwd", ("/tmp/l", False): "/tmp/l"})
    out, replies = inspector.from_client(b"")
    assert out == b"" and b"/etc is read-only" in replies
    # a path the target could not resolve is refused
    inspector.from_client(packet(s.OPEN, b"/tmp/y", 0x01, 0, req_id=4))
    inspector.found({("/tmp/y", True): None})
    _, replies = inspector.from_client(b"")
    assert seen[-1].unresolved == "the target could not resolve the path"
