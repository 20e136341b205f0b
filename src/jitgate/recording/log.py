"""A session's append-only, hash-chained event log (JSON Lines).

Theory of operation
-------------------
Each event is one line of JSON: the event's canonical JSON (sorted keys, no spaces) with
its hash added as the last member::

    {"at": ..., "prev": H(n-1), "seq": n, "type": ..., ..., "hash": H(n)}

where ``H(n) = SHA-256(H(n-1) || canonical JSON of the event without "hash")`` and
``H(0)`` is SHA-256 of ``"jitgate-session:" + session id``. Editing, removing or
reordering any line breaks the chain from that line on, and :func:`verify_chain` names the
first line that does not match.

Events are encoded at once and handed to the kernel by :meth:`EventLog.flush` — one
``write`` on an ``O_APPEND`` descriptor for everything pending. The protocol adapters
flush before they forward a request upstream, so the request's event survives a crash of
the gateway process; result events ride along with the next flush (or a short timer).
``fsync`` happens at close and on :meth:`EventLog.sync` (before each request with
``recording.fsync: request``). A failed write keeps the bytes
that did not reach the kernel (up to :data:`MAX_REQUEUE`) for the next flush, so a
recording that recovers (a full disk freed) continues its chain without a gap.

At close the recorder appends a ``seal`` event whose Ed25519 signature covers the final
digest (see :mod:`jitgate.recording.seal`).
"""

from __future__ import annotations

import hashlib
import operator
import os
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

#: Unwritten bytes kept for the next flush after a failed write; beyond this they are lost.
MAX_REQUEUE = 4 << 20


def genesis(session_id: str) -> str:
    return hashlib.sha256(f"jitgate-session:{session_id}".encode()).hexdigest()


def _canonical(event: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are hashed and stored."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS, default=str)


#: Marks the places of an :class:`EventShape`'s variable members while it is built; the
#: nonce keeps content (a table name, a reason) from ever looking like one.
_SLOT_NONCE = secrets.token_hex(16)
_SLOT = re.compile(rb'"jitgate-slot-' + _SLOT_NONCE.encode("ascii") + rb'-(\d+)"')


class EventShape:
    """The canonical JSON of one kind of event with its variable members left open.

    Events of the same shape (same type, same fixed members, same variable member names)
    differ only in the variable values, so the sorted, encoded text around them is built
    once: :meth:`EventLog.append_shaped` then fills in ``at``, ``prev``, ``seq`` and the
    ``fields`` (each given already encoded as JSON, or as an ``int`` for those in
    ``ints``), and the result is byte for byte what :func:`_canonical` makes of the whole
    event. Raises ValueError if the shape cannot be built (then encode the event whole).
    """

    __slots__ = ("pick", "template")

    def __init__(
        self, type: str, fixed: dict[str, Any], fields: tuple[str, ...], ints: frozenset[str]
    ) -> None:
        names = ("at", "prev", "seq", *fields)
        if len(set(names)) != len(names) or any(name in fixed for name in (*names, "type")):
            raise ValueError("a member is both fixed and variable")
        event = {**fixed, "type": type}
        event.update((name, f"jitgate-slot-{_SLOT_NONCE}-{i}") for i, name in enumerate(names))
        encoded = _canonical(event)
        parts = _SLOT.split(encoded)  # text, slot index, text, slot index, ..., text
        order = [int(index) for index in parts[1::2]]
        if sorted(order) != list(range(len(names))):
            raise ValueError("the event's fixed members hide its slots")
        # The values come as (second, microseconds, prev, seq, *fields): "at" takes two.
        template = bytearray(parts[0].replace(b"%", b"%%"))
        picks: list[int] = []
        for index, text in zip(order, parts[2::2], strict=True):
            name = names[index]
            if name == "at":
                template += b'"%s.%06d+00:00"'
                picks += (0, 1)
            elif name == "prev":
                template += b'"%s"'
                picks.append(2)
            else:
                template += b"%d" if name == "seq" or name in ints else b"%s"
                picks.append(index + 1)
            template += text.replace(b"%", b"%%")
        if not template.endswith(b"}"):
            raise ValueError("unexpected encoding")
        #: The event's canonical JSON without its closing brace, to be %-formatted with
        #: what :attr:`pick` takes from (second, microseconds, prev, seq, *fields).
        self.template = bytes(template[:-1])
        self.pick = operator.itemgetter(*picks)


def chain_hash(prev: str, event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(prev.encode("ascii") + _canonical(body)).hexdigest()


class EventLog:
    def __init__(self, path: Path, session_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.session_id = session_id
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.seq = 0
        self._head_bytes = genesis(session_id).encode("ascii")
        self._second = -1
        self._second_text = ""
        self._second_bytes = b""
        self.bytes_written = 0
        self.failed: OSError | None = None  # the last flush failed (and its bytes wait)
        self.lost = 0  # batches given up after a failure (fail-open): the chain has a gap
        self._pending: list[bytes] = []

    @classmethod
    def resume(cls, path: Path, session_id: str, seq: int, head: str) -> EventLog:
        """Go on with an existing recording whose last event is ``seq`` with hash ``head``
        (recovery: a crashed gateway's recording gets its seal)."""
        event_log = cls(path, session_id)
        event_log.seq = seq
        event_log._head_bytes = head.encode("ascii")
        return event_log

    @property
    def head(self) -> str:
        """The hash of the last event (the chain's genesis before the first)."""
        return self._head_bytes.decode("ascii")

    def append(self, type: str, data: dict[str, Any], at_ns: int | None = None) -> int:
        """Encode one event into the pending buffer; returns its sequence number.

        ``data`` becomes the event (it is not copied: the caller hands it over); ``at_ns``
        is when it happened (``time.time_ns()``), if not now.
        """
        if self._fd is None:
            raise OSError("event log is closed")
        self.seq += 1
        data["seq"] = self.seq
        data["at"] = self._now(time.time_ns() if at_ns is None else at_ns)
        data["type"] = type
        data["prev"] = self.head
        body = _canonical(data)
        digest = hashlib.sha256(self._head_bytes + body).hexdigest().encode("ascii")
        # The stored line is the hashed body with "hash" added as its last member.
        self._pending.append(b'%s,"hash":"%s"}\n' % (body[:-1], digest))
        self._head_bytes = digest
        return self.seq

    def append_shaped(
        self, shape: EventShape, values: tuple[Any, ...] | list[Any], at_ns: int | None = None
    ) -> int:
        """:meth:`append` for an event of a known :class:`EventShape`: ``values`` are its
        variable fields, encoded (see there). Stores the same bytes :meth:`append` would."""
        if self._fd is None:
            raise OSError("event log is closed")
        self.seq = seq = self.seq + 1
        seconds, nanos = divmod(time.time_ns() if at_ns is None else at_ns, 1_000_000_000)
        if seconds != self._second:
            self._now(seconds * 1_000_000_000)
        head = self._head_bytes
        body = shape.template % shape.pick((self._second_bytes, nanos // 1000, head, seq, *values))
        digest = hashlib.sha256(head + body + b"}").hexdigest().encode("ascii")
        self._pending.append(b'%s,"hash":"%s"}\n' % (body, digest))
        self._head_bytes = digest
        return seq

    def _now(self, ns: int) -> str:
        """``ns`` as ISO 8601 (microseconds, UTC); the date part is formatted once a second."""
        seconds, nanos = divmod(ns, 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            self._second_text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second_bytes = self._second_text.encode("ascii")
        return f"{self._second_text}.{nanos // 1000:06d}+00:00"

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        """Write everything pending with one system call. Raises OSError if it cannot."""
        pending = self._pending
        if not pending:
            return
        if self._fd is None:
            raise OSError("event log is closed")
        data = b"".join(pending)
        pending.clear()
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._keep(data, exc)
            raise
        self.bytes_written += written
        if written < len(data):  # a short write: write the rest (or keep it)
            view = memoryview(data)[written:]
            try:
                while view:
                    written = os.write(self._fd, view)
                    self.bytes_written += written
                    view = view[written:]
            except OSError as exc:
                self._keep(bytes(view), exc)
                raise
        self.failed = None

    def _keep(self, unwritten: bytes, exc: OSError) -> None:
        """A write failed: keep what it did not write for the next flush, if not too much."""
        self.failed = exc
        if len(unwritten) <= MAX_REQUEUE:
            self._pending.append(unwritten)
        else:
            self.lost += 1

    def sync(self) -> None:
        """Write what is pending and wait until it is on the disk (``fdatasync``)."""
        self.flush()
        if self._fd is not None:
            os.fdatasync(self._fd)

    def close(self, retry_for: float = 0.0) -> None:
        """Write what is pending, fsync, close. A failing write is retried every 0.1 s
        for up to ``retry_for`` seconds (a disk that frees up in time loses nothing)."""
        if self._fd is not None:
            try:
                deadline = time.monotonic() + retry_for
                while True:
                    try:
                        self.flush()
                        break
                    except OSError:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(0.1)
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def verify_chain(path: Path, session_id: str) -> tuple[bool, int | None, str | None]:
    """Check the chain; returns (ok, first bad line number, why)."""
    prev = genesis(session_id)
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                event = orjson.loads(line)
            except ValueError:
                return False, number, "line is not valid JSON"
            if event.get("prev") != prev:
                return False, number, "event does not follow the previous one"
            if chain_hash(prev, event) != event.get("hash"):
                return False, number, "event content does not match its hash"
            prev = event["hash"]
    return True, None, None
