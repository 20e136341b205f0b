"""The spool ring between two real processes: every record arrives, whole and in order,
across many wrap-arounds, while the reader reads as the writer writes (a position read
half written would show as a record out of order or as :class:`RingCorrupt`)."""

from __future__ import annotations

import marshal
import subprocess
import sys
from pathlib import Path

import pytest

from jitgate.recording.ring import HEADER, Ring

READER = """
import marshal, sys, time
from pathlib import Path
from jitgate.recording.ring import Ring
ring, expect = Ring.attach(Path(sys.argv[1])), 0
deadline = time.monotonic() + 60
while expect < int(sys.argv[2]) and time.monotonic() < deadline:
    records, position = ring.read()
    for raw in records:
        value = marshal.loads(raw)
        assert value == (expect, b"x" * (expect % 300)), (value[0], expect)
        expect += 1
    ring.consume(position)
print(expect)
"""


def test_records_cross_between_processes_whole_and_in_order(tmp_path: Path) -> None:
    ring = Ring.create(tmp_path / "test.ring", 64 << 10)  # small: it wraps every ~400 records
    count = 200_000
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(ring.path), str(count)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        sent = 0
        while sent < count:
            if ring.put(marshal.dumps((sent, b"x" * (sent % 300)))):
                sent += 1
            elif reader.poll() is not None:
                break
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
        ring.close()
    assert reader.returncode == 0 and out.strip() == str(count)


def test_a_full_ring_takes_nothing_and_a_record_too_large_is_refused(tmp_path: Path) -> None:
    ring = Ring.create(tmp_path / "small.ring", 4096)
    try:
        while ring.put(b"r" * 100):
            pass
        assert ring.write_position - ring.read_position <= 4096
        records, position = ring.read()
        assert len(records) == ring.write_position // 104 and set(records) == {b"r" * 100}
        ring.consume(position)
        assert ring.put(b"r" * 100)  # room again once consumed
        with pytest.raises(ValueError):
            ring.put(b"r" * 5000)
    finally:
        ring.close()
    assert (tmp_path / "small.ring").stat().st_size == HEADER + 4096
