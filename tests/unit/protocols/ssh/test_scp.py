"""Legacy scp: which execs are scp, and each file decided in the rcp stream (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jitgate.protocols.ssh.scp import SCPInspector, SCPProtocolError, SCPRequest, parse_scp
from jitgate.shell import classify


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scp -t /srv/app.tgz", SCPRequest("/srv/app.tgz", True, False)),
        ("scp -v -r -p -d -t -- /srv", SCPRequest("/srv", True, True)),
        ("scp -f /etc/hosts", SCPRequest("/etc/hosts", False, False)),
        ("scp -f -- '/var/log/*.log'", SCPRequest("/var/log/*.log", False, False)),
        ("scp -t 'dir with space'", SCPRequest("dir with space", True, False)),
        ("scp -t /a /b", None),
        ("scp -t -f /a", None),
        ("scp -t /a; rm -rf /b", None),
        ("scp -t /a > /dev/sda", None),
        ("scp -t $(reboot)", None),
        ("scp -t /a$HOME", None),
        ("scp -t '/tmp/*'", None),
        ("scp -f '/e*/shadow'", None),
        ("scp -S /bin/evil -t /a", None),
        ("scp -o ProxyCommand=x -t /a", None),
        ("sudo scp -t /a", None),
        ("/usr/bin/scp -t /a", None),
        ("scp -t", None),
        ("ls -t /a", None),
    ],
)
def test_only_plain_scp_is_scp(command: str, expected: SCPRequest | None) -> None:
    assert parse_scp(classify(command)) == expected


def deny(prefix: str) -> tuple[list[tuple[str, bool]], object]:
    seen: list[tuple[str, bool]] = []

    def decide(path: str, write: bool) -> str | None:
        seen.append((path, write))
        return "off limits" if path.startswith(prefix) else None

    return seen, decide


def test_upload_skips_a_denied_file_and_its_data_and_goes_on() -> None:
    seen, decide = deny("/dst/secret")
    scp = SCPInspector(decide, SCPRequest("/dst", True, True))  # type: ignore[arg-type]
    # the server (sink) is ready
    assert scp.from_sink(b"\0") == (b"\0", b"")
    # allowed file: the header goes on, its data only after the server's answer
    assert scp.from_source(b"C0644 3 ok.txt\n") == (b"C0644 3 ok.txt\n", b"")
    assert scp.from_source(b"abc\0") == (b"", b"")  # held until the answer
    assert scp.from_sink(b"\0") == (b"\0", b"abc\0")
    assert scp.from_sink(b"\0") == (b"\0", b"")  # the data's answer
    # a directory, then a denied file in it: the client is warned and skips it
    assert scp.from_source(b"D0755 0 sub\n") == (b"D0755 0 sub\n", b"")
    assert scp.from_sink(b"\0") == (b"\0", b"")
    assert scp.from_source(b"C0600 5 x\n") == (b"C0600 5 x\n", b"")
    assert scp.from_sink(b"\0") == (b"\0", b"")
    forward, reply = scp.from_source(b"hello\0E\n")
    assert forward == b"hello\0E\n" and reply == b""
    assert scp.from_sink(b"\0\0") == (b"\0\0", b"")
    forward, reply = scp.from_source(b"C0600 6 secret\n")
    assert forward == b"" and reply == b"\x01jitgate: /dst/secret: off limits\n"
    assert seen == [("/dst/ok.txt", True), ("/dst/sub", True), ("/dst/sub/x", True),
                    ("/dst/secret", True)]  # fmt: skip


def test_upload_data_is_not_taken_for_records_when_the_server_refuses_a_file() -> None:
    _, decide = deny("/nothing")
    scp = SCPInspector(decide, SCPRequest("/dst", True, False))  # type: ignore[arg-type]
    scp.from_sink(b"\0")
    scp.from_source(b"C0644 3 a\n")
    assert scp.from_sink(b"\x01scp: /dst/a: Permission denied\n")[0].startswith(b"\x01")
    # the client skips the data and sends the next file
    assert scp.from_source(b"C0644 1 b\n") == (b"C0644 1 b\n", b"")


def test_download_drops_a_denied_file_and_warns_the_client() -> None:
    seen, decide = deny("/src/secret")
    scp = SCPInspector(decide, SCPRequest("/src", False, True))  # type: ignore[arg-type]
    assert scp.from_sink(b"\0") == (b"\0", b"")  # the client is ready
    assert scp.from_source(b"D0755 0 src\n") == (b"D0755 0 src\n", b"")
    assert scp.from_sink(b"\0") == (b"\0", b"")
    # denied: answered here, data dropped and answered, the client gets a warning only
    to_client, to_server = scp.from_source(b"C0600 4 secret\nab")
    assert (to_client, to_server) == (b"\x01jitgate: /src/secret: off limits\n", b"\0")
    assert scp.from_source(b"cd\0") == (b"", b"\0")
    assert scp.from_source(b"C0644 2 ok\n") == (b"C0644 2 ok\n", b"")
    assert scp.from_sink(b"\0") == (b"\0", b"")
    assert scp.from_source(b"hi\0") == (b"hi\0", b"")
    assert ("/src/secret", False) in seen and ("/src/ok", False) in seen


def test_download_drops_a_whole_denied_directory() -> None:
    _, decide = deny("/src/secret")
    scp = SCPInspector(decide, SCPRequest("/src", False, True))  # type: ignore[arg-type]
    scp.from_sink(b"\0")
    scp.from_source(b"D0755 0 src\n")
    scp.from_sink(b"\0")
    stream = b"D0700 0 secret\nC0600 1 k\nK\0D0700 0 deeper\nE\nE\nC0644 1 ok\n"
    to_client, to_server = scp.from_source(stream)
    assert to_client == b"\x01jitgate: /src/secret: off limits\nC0644 1 ok\n"
    assert to_server == b"\0" * 6  # D, C, data, D, E, E answered for the client


def test_malformed_records_are_a_protocol_error() -> None:
    _, decide = deny("/x")
    scp = SCPInspector(decide, SCPRequest("/dst", True, False))  # type: ignore[arg-type]
    scp.from_sink(b"\0")
    for bad in (b"Xjunk\n", b"C0644 abc name\n", b"C0644 1 ../../etc/passwd\n"):
        with pytest.raises(SCPProtocolError):
            SCPInspector(decide, SCPRequest("/dst", True, False)).from_source(bad)  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_garbage_never_crashes_otherwise(data: bytes) -> None:
    _, decide = deny("/x")
    scp = SCPInspector(decide, SCPRequest("/dst", False, True))  # type: ignore[arg-type]
    try:
        scp.from_sink(b"\0")
        scp.from_source(data)
        scp.from_sink(data)
    except SCPProtocolError:
        pass
