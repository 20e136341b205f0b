"""The spool ring: a file-backed, memory-mapped queue from the gateway to its writer.

Theory of operation
-------------------
The gateway hands each recording record (see :mod:`jitgate.recording.handoff`) to its
writer process (:mod:`jitgate.recording.writer`) by copying it into a shared, preallocated
file mapped into both processes: no system call, no wake-up. A record in the mapping is as
durable as a ``write`` to a file — it is in the page cache and survives the crash of
either process — so the gateway may forward a request as soon as its record is in the ring.

Layout (native byte order: the file never leaves the machine): a header page, then
``size`` bytes of data. The header holds, each on its own cache line, the *write
position* (bytes ever put, advanced by the gateway once a record is complete) and the
*read position* (bytes the writer has consumed, advanced only after the events it made
of them were handed to the kernel). Positions grow without bound; a record starts at
``position % size``. Each record is a 4-byte length and its bytes; a record does not
wrap around: when it does not fit before the end of the data area, a length of
:data:`_WRAP` marks the rest of the area as skipped.

One process writes (the gateway's event loop), one reads. Positions are 8-byte aligned
words stored through a memoryview cast to native ``q`` (one 8-byte ``memcpy``, one
store; not ``struct.pack_into``, which zeroes its target before it writes, so a reader
could see a position of 0): on x86-64 and arm64 such a store is single-copy atomic, and
on x86-64 stores are seen in program order, so a reader that sees a write position sees
the bytes before it. (The reader also checks what it reads: a length beyond the written
area is reported as corruption, not followed.)

Unconsumed records (between the two positions) are what a crash left to do:
:func:`jitgate.recording.handoff.drain_leftovers` and ``Handoff.take_over`` apply them
to the session logs.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

MAGIC = b"JGSPOOL1"
HEADER = 4096
_WPOS = 64
_RPOS = 128
_OWNER = 16  # pid of the gateway that writes (int64)
_SIZE = 8  # data size (int64)
_Q = struct.Struct("q")  # (the header's fields, written once at creation)
_W = _WPOS // 8
_R = _RPOS // 8
_LEN = struct.Struct("<I")
_WRAP = 0xFFFFFFFF

#: Default size of the data area: at 300 bytes a record, ~100k records in flight.
DEFAULT_SIZE = 32 << 20


class RingCorrupt(Exception):
    """The ring's header or a record's length does not make sense."""


class Ring:
    """One mapping of a spool ring file (the gateway's side or the writer's)."""

    __slots__ = ("_fd", "_mm", "_rpos_cache", "_words", "_wpos", "path", "size")

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, size: int) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self.size = size
        #: The header as 8-byte words: positions are read and stored whole through it.
        self._words = memoryview(mm)[:HEADER].cast("q")
        self._wpos = self._words[_WPOS // 8]  # the gateway side's own copy
        self._rpos_cache = self._words[_RPOS // 8]

    @classmethod
    def create(cls, path: Path, size: int = DEFAULT_SIZE, *, owner: int | None = None) -> Ring:
        """A new ring file, its space allocated up front (a full disk fails here, not at a
        write into the mapping, where it would be a SIGBUS)."""
        if size % 8 or size < 4096:
            raise ValueError("ring size must be a multiple of 8, at least 4096")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, HEADER + size)
            mm = mmap.mmap(fd, HEADER + size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        mm[0:8] = MAGIC
        _Q.pack_into(mm, _SIZE, size)
        _Q.pack_into(mm, _OWNER, os.getpid() if owner is None else owner)
        return cls(path, fd, mm, size)

    @classmethod
    def attach(cls, path: Path) -> Ring:
        fd = os.open(path, os.O_RDWR)
        try:
            total = os.fstat(fd).st_size
            if total < HEADER:
                raise RingCorrupt(f"{path}: too short for a spool ring")
            mm = mmap.mmap(fd, total)
        except BaseException:
            os.close(fd)
            raise
        size = _Q.unpack_from(mm, _SIZE)[0]
        if mm[0:8] != MAGIC or size + HEADER != total:
            mm.close()
            os.close(fd)
            raise RingCorrupt(f"{path}: not a spool ring")
        return cls(path, fd, mm, size)

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def owner(self) -> int:
        return int(_Q.unpack_from(self._mm, _OWNER)[0])

    @property
    def write_position(self) -> int:
        return int(self._words[_WPOS // 8])

    @property
    def read_position(self) -> int:
        return int(self._words[_RPOS // 8])

    # ---------------------------------------------------------------- the gateway

    def put(self, record: bytes) -> bool:
        """Copy one record in and publish it; False (nothing written) if there is no room."""
        n = len(record)
        wpos = self._wpos
        size = self.size
        offset = wpos % size
        need = 4 + n
        skip = size - offset if offset + need > size else 0
        if wpos + skip + need - self._rpos_cache > size:
            self._rpos_cache = self._words[_R]
            if wpos + skip + need - self._rpos_cache > size:
                if need > size:
                    raise ValueError("record larger than the ring")
                return False
        mm = self._mm
        if skip:
            if skip >= 4:
                _LEN.pack_into(mm, HEADER + offset, _WRAP)
            wpos += skip
            offset = 0
        start = HEADER + offset
        _LEN.pack_into(mm, start, n)
        mm[start + 4 : start + need] = record
        self._wpos = wpos = wpos + need
        self._words[_W] = wpos
        return True

    # ----------------------------------------------------------------- the writer

    def read(self, limit: int = 4096) -> tuple[list[bytes], int]:
        """Up to ``limit`` published records from the read position on, and the position
        after them (give it to :meth:`consume` once they are dealt with)."""
        mm = self._mm
        size = self.size
        words = self._words
        rpos = words[_R]
        wpos = words[_W]
        if wpos - rpos > size or wpos < rpos:
            raise RingCorrupt(f"{self.path}: positions out of range ({rpos}, {wpos})")
        records: list[bytes] = []
        while rpos < wpos and len(records) < limit:
            offset = rpos % size
            if size - offset < 4:
                rpos += size - offset
                continue
            (n,) = _LEN.unpack_from(mm, HEADER + offset)
            if n == _WRAP:
                rpos += size - offset
                continue
            if offset + 4 + n > size or rpos + 4 + n > wpos:
                raise RingCorrupt(f"{self.path}: record of {n} bytes at {rpos} runs past the end")
            start = HEADER + offset + 4
            records.append(mm[start : start + n])
            rpos += 4 + n
        return records, rpos

    def consume(self, position: int) -> None:
        self._words[_R] = position

    def close(self) -> None:
        self._words.release()
        if not self._mm.closed:
            self._mm.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
