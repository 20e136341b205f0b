"""Recording in a writer process: the gateway hands records over, the writer encodes them.

Theory of operation
-------------------
Encoding an event (canonical JSON, the SHA-256 chain) and writing it costs the gateway's
event loop as much as parsing and deciding the statement. So sessions recorded with
``recording.writer: process`` (PostgreSQL sessions with ``fsync: close``; not the default)
only describe what happened — a small tuple, a *record* (:mod:`jitgate.recording.encode`)
— and copy it, marshalled, into a spool ring shared with one writer process per gateway
(:mod:`jitgate.recording.ring`, :mod:`jitgate.recording.writer`). The writer applies the
records to the sessions' event logs, in the order they were put, and hands them to the
kernel before it marks them consumed.

Durability is the ring's: a record is in the shared file's pages before the request it
describes is forwarded, so a crash of the gateway, of the writer or of both loses nothing
that reached the target:

* the gateway dies: the writer sees its control socket close, applies what is left,
  closes the logs and removes the ring; the sessions are then sealed by recovery
  (:mod:`jitgate.recording.recovery`) as for any crash.
* the writer dies: the gateway takes over (:meth:`Handoff.take_over`): it applies the
  unconsumed records itself and its sessions go on recording inline; the next session
  starts a new writer.
* both die: the next gateway on the data dir applies what the ring still holds
  (:func:`drain_leftovers`) before recovery seals the sessions.

A record applied twice (the writer had written it but not yet marked it consumed) is
skipped: each record carries its event's sequence number in the session's log.

The writer reports over the control socket, one JSON line each: a session whose log
cannot be written (``failed``; a session that fails closed then refuses its statements),
one that can be again (``ok``), and a closed log's last sequence number and hash
(``closed``), from which the gateway appends ``session.end`` and the seal itself (the
signing key stays in the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from jitgate.recording.encode import CLOSE, OPEN, SessionEncoder, load_record
from jitgate.recording.log import EventLog, genesis
from jitgate.recording.recovery import process_alive
from jitgate.recording.ring import DEFAULT_SIZE, Ring, RingCorrupt

log = logging.getLogger("jitgate.recording")

#: The spool rings' folder, under the recordings root.
SPOOL = ".spool"
#: How long a put waits for room in a full ring before the recording counts as failed.
FULL_WAIT_SECONDS = 10.0
#: How long a gateway starting waits for a stopped gateway's writer to finish its ring.
LEFTOVER_WAIT_SECONDS = 30.0
#: How long closing a log retries a write that fails (as the inline recorder does).
CLOSE_RETRY_SECONDS = 2.0


def tail_state(path: Path, session_id: str) -> tuple[int, str]:
    """The sequence number and hash of the last complete event of the log at ``path``
    ((0, genesis) for an empty or missing one). A last line left half written by a crash
    is cut: its record is still in the ring and is applied again."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0, genesis(session_id)
    try:
        size = os.fstat(fd).st_size
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            data = os.pread(fd, size - start, start)
            end = data.rfind(b"\n")
            if end < 0 and start > 0:
                chunk *= 4
                continue
            if start + end + 1 < size:  # a line a crash cut short
                os.ftruncate(fd, start + end + 1)
            if end < 0:
                return 0, genesis(session_id)
            begin = data.rfind(b"\n", 0, end) + 1
            if begin == 0 and start > 0:
                chunk *= 4
                continue
            event = orjson.loads(data[begin:end])
            return int(event["seq"]), str(event["hash"])
    finally:
        os.close(fd)


def resume_log(path: Path, session_id: str) -> EventLog:
    """The event log at ``path``, opened to go on after its last complete event."""
    seq, head = tail_state(path, session_id)
    return EventLog.resume(path, session_id, seq, head)


class Applier:
    """Applies records to the logs of the sessions they name: the writer's loop, and the
    drain of what a dead writer left (``locate`` finds the log of a session whose OPEN
    record is gone, or None if it is not known)."""

    def __init__(self, locate: Callable[[str], Path | None]) -> None:
        self.locate = locate
        self.sessions: dict[str, SessionEncoder] = {}
        self.failed: dict[str, OSError] = {}
        self.replies: list[dict[str, Any]] = []
        self._touched: set[str] = set()

    def apply(self, record: tuple[Any, ...]) -> None:
        kind, session = record[0], record[1]
        if kind == OPEN:
            if session not in self.sessions:
                path = Path(record[4])
                encoder = self.sessions[session] = SessionEncoder(resume_log(path, session))
                if record[2] > encoder.log.seq:
                    encoder.log.append("session.start", orjson.loads(record[5]), record[3])
                    self._touched.add(session)
            return
        found = self.sessions.get(session) or self._find(session)
        if found is None:
            log.error("recording record for unknown session %s dropped", session)
            return
        if kind == CLOSE:
            self._close(session, found)
            return
        found.apply(record)
        self._touched.add(session)

    def _find(self, session: str) -> SessionEncoder | None:
        path = self.locate(session)
        if path is None:
            return None
        encoder = self.sessions[session] = SessionEncoder(resume_log(path, session))
        return encoder

    def _close(self, session: str, encoder: SessionEncoder) -> None:
        del self.sessions[session]
        self._touched.discard(session)
        event_log = encoder.log
        reply: dict[str, Any] = {"closed": session, "seq": event_log.seq, "head": event_log.head}
        try:
            event_log.close(CLOSE_RETRY_SECONDS)
        except OSError as exc:
            reply["error"] = f"{exc}"
        if event_log.lost:
            reply["lost"] = event_log.lost
        self.failed.pop(session, None)
        self.replies.append(reply)

    def flush(self) -> None:
        """Hand what the applied records made to the kernel; note logs that fail or
        recover (their bytes wait in the log for the next try)."""
        touched, self._touched = self._touched, set()
        touched.update(self.failed)
        for session in touched:
            encoder = self.sessions.get(session)
            if encoder is None:
                continue
            try:
                encoder.log.flush()
            except OSError as exc:
                if session not in self.failed:
                    self.replies.append({"failed": session, "error": f"{exc}"})
                self.failed[session] = exc
            else:
                if self.failed.pop(session, None) is not None:
                    self.replies.append({"ok": session})

    def apply_ring(self, ring: Ring) -> int:
        """Apply every unconsumed record of ``ring`` (flushing as it goes); the count."""
        count = 0
        while True:
            records, position = ring.read()
            if not records:
                return count
            for raw in records:
                self.apply(load_record(raw))
            self.flush()
            ring.consume(position)
            count += len(records)

    def close_all(self) -> None:
        for session, encoder in list(self.sessions.items()):
            self._close(session, encoder)


class Subscriber(Protocol):
    """What a gateway-side session recorder hears from the writer."""

    def writer_failed(self, error: str | None) -> None: ...

    def writer_gone(self, encoder: SessionEncoder) -> None: ...


class Handoff:
    """The gateway's end of one writer process and its spool ring."""

    def __init__(
        self, ring: Ring, process: subprocess.Popen[bytes], control: socket.socket
    ) -> None:
        self.ring = ring
        self.process = process
        self.control = control
        self.alive = True
        self._buffer = b""
        self._subscribers: dict[str, tuple[Subscriber, Path]] = {}
        self._closing: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(control.fileno(), self._on_control)

    @classmethod
    def start(cls, root: Path, *, size: int = DEFAULT_SIZE) -> Handoff:
        """A new ring under ``root/.spool`` and a writer process for it (call from the
        event loop)."""
        spool = root / SPOOL
        path = spool / f"{os.getpid()}-{time.time_ns()}.ring"
        ring = Ring.create(path, size)
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "jitgate.recording.writer", str(path), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        except BaseException:
            ring.close()
            path.unlink(missing_ok=True)
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        log.info("recording writer process %d started on %s", process.pid, path)
        return cls(ring, process, ours)

    # ------------------------------------------------------------------ sessions

    def subscribe(self, session: str, subscriber: Subscriber, path: Path) -> None:
        self._subscribers[session] = (subscriber, path)

    def put_bytes(self, data: bytes) -> bool:
        """Hand one marshalled record (:func:`encode.dump_record`) over. False when the
        writer is gone (and was taken over: the caller records inline from now on);
        OSError when the ring stays full."""
        if self.ring.put(data):
            return True
        if not self.alive:
            return False
        deadline = time.monotonic() + FULL_WAIT_SECONDS
        while time.monotonic() < deadline:  # the writer is behind: wait for it (rare)
            if self.process.poll() is not None:
                self.take_over()
                return False
            time.sleep(0.001)
            if self.ring.put(data):
                return True
        raise OSError("the recording writer does not keep up (its spool ring is full)")

    def close_session(self, session: str) -> asyncio.Future[dict[str, Any]]:
        """The writer's answer to the session's CLOSE record (put it after this call)."""
        future = self._closing[session] = self._loop.create_future()
        return future

    def wake(self) -> None:
        """Have the writer look at the ring now, not at its next poll."""
        with contextlib.suppress(OSError):
            self.control.send(b"\n")

    def forget(self, session: str) -> None:
        self._subscribers.pop(session, None)
        self._closing.pop(session, None)

    # ------------------------------------------------------------------- reports

    def _on_control(self) -> None:
        try:
            data = self.control.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.take_over()
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._report(orjson.loads(line))

    def _report(self, report: dict[str, Any]) -> None:
        if "closed" in report:
            future = self._closing.pop(report["closed"], None)
            self._subscribers.pop(report["closed"], None)
            if future is not None and not future.done():
                future.set_result(report)
            return
        session = report.get("failed") or report.get("ok")
        entry = self._subscribers.get(session or "")
        if entry is not None:
            entry[0].writer_failed(report.get("error") if "failed" in report else None)

    # ------------------------------------------------------------------- failure

    def _detach(self) -> bool:
        """Stop listening to the writer and close the control socket (which the writer
        takes as the end); False if that was done before."""
        if not self.alive:
            return False
        self.alive = False
        with contextlib.suppress(ValueError, OSError, RuntimeError):  # (a loop closed already)
            self._loop.remove_reader(self.control.fileno())
        self.control.close()
        return True

    def take_over(self) -> None:
        """The writer is gone: apply what it left in the ring here and hand each live
        session its log, to record inline from now on."""
        if not self._detach():
            return
        if self.process.poll() is None:  # it closed its socket but lives on: stop it
            self.process.kill()
        self.process.wait()
        log.error(
            "recording writer process %d exited (%s); its sessions are recorded inline",
            self.process.pid,
            self.process.returncode,
        )
        subscribers = self._subscribers

        def locate(session: str) -> Path | None:
            entry = subscribers.get(session)
            return entry[1] if entry is not None else None

        applier = Applier(locate)
        with contextlib.suppress(OSError):
            fcntl.flock(self.ring.fd, fcntl.LOCK_EX)
        try:
            applier.apply_ring(self.ring)
        except RingCorrupt as exc:
            log.error("recording spool ring %s: %s", self.ring.path, exc)
        for report in applier.replies:
            self._report(report)
        for session, future in list(self._closing.items()):  # closed, but no answer came
            if not future.done():
                entry = subscribers.get(session)
                path = entry[1] if entry else None
                seq, head = tail_state(path, session) if path else (0, genesis(session))
                future.set_result({"closed": session, "seq": seq, "head": head})
        self._closing.clear()
        for session, (subscriber, path) in list(subscribers.items()):
            encoder = applier.sessions.pop(session, None)
            subscriber.writer_gone(encoder or SessionEncoder(resume_log(path, session)))
        subscribers.clear()
        applier.close_all()
        self.ring.close()
        self.ring.path.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the control socket: the writer applies what is left and exits."""
        if not self._detach():
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("recording writer process %d does not exit; killed", self.process.pid)
            self.process.kill()
            self.process.wait()
        self.ring.close()


def drain_leftovers(root: Path, locate: Callable[[str], Path | None]) -> bool:
    """Apply the records that rings of gateways gone (and their writers) left under
    ``root/.spool``, then remove the rings. False when a ring is still in use by a
    writer finishing its work (try again later; recovery must wait for it)."""
    spool = root / SPOOL
    if not spool.is_dir():
        return True
    done = True
    for path in sorted(spool.glob("*.ring")):
        try:
            ring = Ring.attach(path)
        except (OSError, RingCorrupt) as exc:
            log.error("recording spool ring %s cannot be read: %s", path, exc)
            continue
        try:
            owner = ring.owner
            if owner == os.getpid() or process_alive(owner):
                continue  # a live gateway's (another one on this data dir)
            if not _lock(ring.fd, LEFTOVER_WAIT_SECONDS):
                done = False  # its writer is still applying it
                continue
            applier = Applier(locate)
            count = applier.apply_ring(ring)
            applier.close_all()
            log.warning(
                "recording spool ring %s of stopped gateway %d: %d record(s) applied",
                path,
                owner,
                count,
            )
            path.unlink(missing_ok=True)
        except RingCorrupt as exc:
            log.error("recording spool ring %s: %s; left in place", path, exc)
        finally:
            ring.close()
    return done


def _lock(fd: int, wait: float) -> bool:
    """Take the ring's lock, waiting up to ``wait`` seconds for a writer to finish."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
