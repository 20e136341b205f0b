"""The start-up codec: any bytes parse or are a ProtocolViolation, nothing else."""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.messages import ProtocolViolation

FUZZ = settings(
    max_examples=int(os.environ.get("JITGATE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VALID = [
    m.startup_message({"user": "alice", "database": "prod-db", "application_name": "psql"}),
    m.ssl_request(),
    m.cancel_request(1234, 5678),
    struct.pack("!II", 8, m.GSSENC_REQUEST),
]


def parse(data: bytes) -> m.StartupPacket | None:
    """What the session does with a packet: None when it is refused as a violation."""
    try:
        length = m.startup_packet_length(data)
        if length is None or length > len(data):
            return None  # the session waits for more (bounded by the handshake timeout)
        return m.parse_startup_packet(data[:length])
    except ProtocolViolation as exc:
        assert exc.sqlstate in ("08P01", "22021")
        return None


def test_valid_packets_parse() -> None:
    packet = m.parse_startup_packet(VALID[0])
    assert packet.code == m.PROTOCOL_V3 and packet.is_startup
    assert dict(packet.params) == {
        "user": "alice",
        "database": "prod-db",
        "application_name": "psql",
    }
    assert m.parse_startup_packet(VALID[2]).cancel_key == (1234, 5678)
    assert not m.parse_startup_packet(VALID[1]).is_startup


def test_bounds() -> None:
    huge = struct.pack("!II", 20_000, m.PROTOCOL_V3)
    assert parse(huge) is None  # refused at the length word, before anything is read
    assert m.startup_packet_length(b"\x00\x00") is None


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    parse(data)
    parse(struct.pack("!I", len(data) + 4) + data)  # a plausible length word


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_mutated_packets(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        if not mutated:
            break
        index = data.draw(st.integers(0, len(mutated) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            mutated[index] = data.draw(st.integers(0, 255))
        elif op == "drop":
            del mutated[index]
        else:
            mutated.insert(index, data.draw(st.integers(0, 255)))
    parse(bytes(mutated))
