"""The recording writer process: ``python -m jitgate.recording.writer RING CONTROL_FD``.

Started by the gateway (:class:`jitgate.recording.handoff.Handoff`), one per gateway
process. It holds an exclusive ``flock`` on its ring while it lives (so a later gateway
knows a ring still being applied from one left behind), applies the records the gateway
puts there to the sessions' event logs, and reports on the control socket (see
:mod:`jitgate.recording.handoff`). It looks for new records every
:data:`POLL_SECONDS` when there were none (no wake-up per record: the gateway makes no
system call to hand one over), at once when there were, and when the gateway writes to
the control socket (a session closing waits for its log).

When the control socket closes — the gateway stopped, or died — it applies what is left,
closes the logs (fsync) and removes the ring. SIGINT is ignored (a Ctrl-C in the
gateway's terminal reaches the whole process group: the gateway closes its sessions
first, through this process); SIGTERM ends it the same way as the socket closing.
"""

from __future__ import annotations

import fcntl
import logging
import select
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import orjson

from jitgate.recording.encode import load_record
from jitgate.recording.handoff import Applier
from jitgate.recording.ring import Ring

log = logging.getLogger("jitgate.recording.writer")

#: How long the writer sleeps when the ring had nothing new: the longer, the more records
#: each wake-up finds, so the fewer writes per record (a session's events of one wake-up
#: are one write). Durability does not wait for it (the ring is the durable copy); a
#: session that closes wakes the writer at once (a byte on the control socket).
POLL_SECONDS = 0.01
#: How often logs whose writes fail are tried again.
RETRY_SECONDS = 0.1


def _unknown(session: str) -> Path | None:
    return None  # every session's OPEN record comes through this writer's ring first


def run(ring: Ring, control: socket.socket) -> None:
    applier = Applier(_unknown)
    stopping = False

    def terminate(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    idle = 0.0
    while True:
        records, position = ring.read()
        if records:
            for raw in records:
                applier.apply(load_record(raw))
            applier.flush()
            ring.consume(position)
            idle = 0.0
        else:
            if stopping:
                break
            ready, _, _ = select.select([control], [], [], POLL_SECONDS)
            if ready:
                try:
                    if not control.recv(4096):
                        stopping = True  # the gateway is gone: finish what it put
                except OSError:
                    stopping = True
            idle += POLL_SECONDS
            if applier.failed and idle >= RETRY_SECONDS:
                applier.flush()
                idle = 0.0
        if applier.replies:
            out = b"".join(orjson.dumps(reply) + b"\n" for reply in applier.replies)
            applier.replies.clear()
            try:
                control.sendall(out)
            except OSError:
                stopping = True
    applier.close_all()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="jitgate-writer %(levelname)s %(message)s")
    path, fd = Path(argv[0]), int(argv[1])
    control = socket.socket(fileno=fd)
    ring = Ring.attach(path)
    fcntl.flock(ring.fd, fcntl.LOCK_EX)
    try:
        run(ring, control)
    except Exception:
        log.exception("recording writer failed; the gateway takes over its ring")
        return 1
    path.unlink(missing_ok=True)
    ring.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
