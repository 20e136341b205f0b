"""CPU cost of the PostgreSQL data path per pgbench transaction, in process, no sockets.

Run: ``python -m bench.pg_path_cpu [--transactions N] [--workload NAME] [--profile]``
or, for instruction counts that machine noise does not move,
``python -m bench.pg_path_cpu --callgrind`` (runs itself under valgrind twice and reports
the difference per transaction, so start-up and warm-up cancel out).

A real :class:`~jitgate.protocols.postgres.session.PostgresSession` relays between two
real :class:`~jitgate.protocols.postgres.legs.Leg` objects whose transports are stubs:
the client leg is fed the bytes pgbench sends for one transaction, the upstream leg the
bytes PostgreSQL answers, and the event loop turns once in between, as it would between
two socket reads. So the statement classifier, the policy gate (Cedar, default pack,
through ``LiveEngine``), the recorder (a real hash-chained log in a temporary directory),
the relay and the session's callbacks all run as in ``jitgate serve``; what is left out
is the kernel and uvloop's socket calls (see :mod:`bench.pgbench_compare` for those).

Workloads (what pgbench's built-in scripts put on the wire):

* ``simple``: ``pgbench -S``; one Query with a new constant each time;
* ``extended``: ``pgbench -S -M extended``; Parse/Bind/Describe/Execute/Sync;
* ``prepared``: ``pgbench -S -M prepared``; Bind/Describe/Execute/Sync of ``P_0``;
* ``tpcb``: pgbench's TPC-B-like script, seven Queries, one round trip each.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import os
import pstats
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from jitgate.config import RecordingSettings
from jitgate.identity.principal import Identity, IdentityKind, Role
from jitgate.masking.service import SessionMasking
from jitgate.policy.cedar import CedarEngine
from jitgate.policy.gate import StatementGate
from jitgate.policy.service import LiveEngine, PolicyDocument, default_pack
from jitgate.policy.types import Target
from jitgate.protocols.postgres.legs import Leg
from jitgate.protocols.postgres.session import PostgresSession
from jitgate.recording.log import EventLog
from jitgate.recording.recorder import SessionRecorder
from jitgate.recording.ring import Ring
from jitgate.sql.postgres import PostgresClassifier

WORKLOADS = ("simple", "extended", "prepared", "tpcb")
SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
SELECT_PARAM = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
TPCB = (
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
    "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
    "END;",
)


# --------------------------------------------------------------------------- wire


def frame(code: bytes, payload: bytes = b"") -> bytes:
    return code + struct.pack("!I", len(payload) + 4) + payload


def z(text: str) -> bytes:
    return text.encode() + b"\0"


def bind(statement: str, value: bytes) -> bytes:
    body = z("") + z(statement) + struct.pack("!HHI", 0, 1, len(value)) + value
    return frame(b"B", body + struct.pack("!H", 0))


DESCRIBE_PORTAL = frame(b"D", b"P" + z(""))
EXECUTE = frame(b"E", z("") + struct.pack("!I", 0))
SYNC = frame(b"S")
ROW_DESCRIPTION = frame(
    b"T", struct.pack("!H", 1) + z("abalance") + struct.pack("!IhIhih", 16397, 2, 23, 4, -1, 0)
)
PARSE_COMPLETE = frame(b"1")
BIND_COMPLETE = frame(b"2")


def data_row(value: int) -> bytes:
    cell = str(value).encode()
    return frame(b"D", struct.pack("!HI", 1, len(cell)) + cell)


def complete(tag: str) -> bytes:
    return frame(b"C", z(tag))


def ready(status: bytes = b"I") -> bytes:
    return frame(b"Z", status)


def parse(name: str, sql: str) -> bytes:
    return frame(b"P", z(name) + z(sql) + struct.pack("!H", 0))


Exchange = tuple[bytes, bytes]  # what the client sends, what the server answers


def transactions(workload: str) -> Iterator[list[Exchange]]:
    """The round trips of one transaction after another (constants as pgbench draws them)."""
    number = 0
    while True:
        number += 1
        aid = number * 7919 % 1_000_000 + 1
        value = number % 10_000 - 5000
        answer = ROW_DESCRIPTION + data_row(value) + complete("SELECT 1")
        if workload == "simple":
            yield [(frame(b"Q", z(SELECT.format(aid=aid))), answer + ready())]
        elif workload == "extended":
            request = parse("", SELECT_PARAM) + bind("", str(aid).encode())
            request += DESCRIBE_PORTAL + EXECUTE + SYNC
            yield [(request, PARSE_COMPLETE + BIND_COMPLETE + answer + ready())]
        elif workload == "prepared":
            request = bind("P_0", str(aid).encode()) + DESCRIBE_PORTAL + EXECUTE + SYNC
            yield [(request, BIND_COMPLETE + answer + ready())]
        else:
            values = {"aid": aid, "delta": value, "tid": number % 100 + 1, "bid": number % 10 + 1}
            exchanges = []
            for index, template in enumerate(TPCB):
                sql = template.format(**values)
                status = b"I" if index == len(TPCB) - 1 else b"T"
                tag = sql.split(" ", 1)[0].rstrip(";")
                if tag == "SELECT":
                    reply = answer
                elif tag == "INSERT":
                    reply = complete("INSERT 0 1")
                elif tag == "END":
                    reply = complete("COMMIT")
                else:
                    reply = complete(tag if tag == "BEGIN" else f"{tag} 1")
                exchanges.append((frame(b"Q", z(sql)), reply + ready(status)))
            yield exchanges


# --------------------------------------------------------------------- the session


class _Transport:
    """Just enough of an asyncio transport: writes are counted and dropped."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


class _Policies:
    """A PolicyService stand-in that never reloads: the default pack, as on a new install."""

    def __init__(self) -> None:
        self._engine = CedarEngine([PolicyDocument("default", default_pack())])

    def engine(self) -> CedarEngine:
        return self._engine


class _Masking:
    """A MaskingService stand-in with no profiles that never changes."""

    def version(self) -> int:
        return 0


class _Spool:
    """The gateway's side of the writer hand-off: records go into a real spool ring, which
    is emptied whenever it fills (what the writer process does is not measured here)."""

    alive = True

    def __init__(self, path: Path) -> None:
        self.ring = Ring.create(path)

    def put_bytes(self, data: bytes) -> bool:
        if not self.ring.put(data):
            self.ring.consume(self.ring.write_position)
            self.ring.put(data)
        return True


class Harness:
    def __init__(self, workload: str, recording: str, directory: Path, count: int) -> None:
        self.workload = workload
        self.recording = recording
        self.directory = directory
        # Built before anything is measured: the harness's own work stays out of it.
        self._transactions = iter(list(itertools.islice(transactions(workload), count)))

    async def start(self) -> None:
        classifier = PostgresClassifier()
        settings = SimpleNamespace(max_message_bytes=64 << 20)
        listener = SimpleNamespace(
            gateway=SimpleNamespace(), settings=settings, classifier=classifier
        )
        self.client = Leg("client", 64 << 20)
        self.client.connection_made(cast(asyncio.Transport, _Transport()))
        self.server = Leg("upstream", 64 << 20)
        self.server.connection_made(cast(asyncio.Transport, _Transport()))
        session = PostgresSession.__new__(PostgresSession)
        session.listener = cast(Any, listener)
        session.settings = cast(Any, settings)
        session.client = self.client
        session.client_addr = "127.0.0.1"
        session.end_reason = "client disconnected"
        session._hold_task = None
        session.masking = SessionMasking(cast(Any, _Masking()), None)
        session.upstream = cast(Any, SimpleNamespace(leg=self.server, parameters=[]))
        admin = Identity("1", "admin", IdentityKind.USER, roles=frozenset({Role.ADMIN}))
        session._gate = StatementGate(
            LiveEngine(cast(Any, _Policies())),
            principal=admin,
            actor=None,
            target=Target("bench", "postgres", {}),
            client_addr="127.0.0.1",
        )
        owner = SimpleNamespace(settings=RecordingSettings())
        path = self.directory / "session.jsonl"
        log = EventLog(path, "bench") if self.recording == "inline" else None
        spool = _Spool(self.directory / "bench.ring") if self.recording == "writer" else None
        self.recorder = SessionRecorder(
            cast(Any, owner), "bench", log, handoff=cast(Any, spool), path=path
        )
        session.recorder = self.recorder
        self.session = session
        self.task = asyncio.get_running_loop().create_task(session._relay())
        await asyncio.sleep(0)
        if self.workload == "prepared":  # pgbench prepares once per connection
            await self._exchange(parse("P_0", SELECT_PARAM) + SYNC, PARSE_COMPLETE + ready())

    async def _exchange(self, request: bytes, answer: bytes) -> None:
        self.client.data_received(request)
        await asyncio.sleep(0)  # the loop turns between the request and its answer
        self.server.data_received(answer)
        await asyncio.sleep(0)

    async def run(self, count: int) -> None:
        for _ in range(count):
            for request, answer in next(self._transactions):
                await self._exchange(request, answer)

    async def stop(self) -> None:
        self.client.connection_lost(None)
        await self.task
        if self.recorder.log is not None:
            self.recorder._timed_flush()
            self.recorder.log.close()


async def measure(workload: str, recording: str, count: int, warmup: int, profile: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="jitgate-bench-path-") as directory:
        harness = Harness(workload, recording, Path(directory), warmup + count)
        await harness.start()
        await harness.run(warmup)
        profiler = cProfile.Profile() if profile else None
        _callgrind_collect(True)
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        await harness.run(count)
        if profiler is not None:
            profiler.disable()
        elapsed = time.process_time() - started
        _callgrind_collect(False)
        await harness.stop()
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
    return elapsed / count * 1e6 if count else 0.0


# ----------------------------------------------------------------------- callgrind

_UNDER_CALLGRIND = "JITGATE_BENCH_CALLGRIND" in os.environ


def _callgrind_collect(on: bool) -> None:
    """Under ``--callgrind``, count instructions of the measured part only."""
    if _UNDER_CALLGRIND:
        switch = "on" if on else "off"
        subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True,
                       capture_output=True)  # fmt: skip


def _instructions(workload: str, recording: str, count: int, warmup: int) -> int:
    with tempfile.TemporaryDirectory(prefix="jitgate-bench-cg-") as directory:
        out = Path(directory) / "callgrind.out"
        argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable, "-m", "bench.pg_path_cpu", "--workload", workload,
            "--transactions", str(count), "--warmup", str(warmup),
            "--recording", recording,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0", "JITGATE_BENCH_CALLGRIND": "1"}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise RuntimeError(done.stderr[-2000:])
        return int(match.group(1))


def callgrind(workloads: list[str], recording: list[str], count: int, warmup: int) -> None:
    print(f"{'workload':<10}{'recording':<11}{'instructions/txn':>18}")
    for workload in workloads:
        for rec in recording:
            small = _instructions(workload, rec, 0, warmup)
            large = _instructions(workload, rec, count, warmup)
            per = (large - small) / count
            print(f"{workload:<10}{rec:<11}{per:>18,.0f}", flush=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop, as ``jitgate serve`` runs with it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--recording", choices=("inline", "writer", "off"), action="append",
        help="inline: events encoded in the loop; writer: records handed to a spool ring "
        "(the writer process's side is not measured); off (default: all three)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="cProfile the measured part")
    parser.add_argument("--callgrind", action="store_true", help="instruction counts")
    args = parser.parse_args()
    workloads: list[str] = args.workload or list(WORKLOADS)
    recording: list[str] = args.recording or ["inline", "writer", "off"]
    if args.callgrind:
        callgrind(workloads, recording, min(args.transactions, 2000), args.warmup)
        return

    def run(workload: str, rec: str) -> float:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(measure(workload, rec, args.transactions, args.warmup, args.profile))

    print(f"{'workload':<10}{'recording':<11}{'CPU µs/txn':>12}")
    for workload in workloads:
        for rec in recording:
            print(f"{workload:<10}{rec:<11}{run(workload, rec):>12.1f}")


if __name__ == "__main__":
    main()
