"""The relay's row path with masking on vs off, without sockets: µs per row.

Run: ``python -m bench.masking_rows [--rows 100000] [--rounds 3] [--profile pii]
[--chunk 65536] [--cprofile]``

The rows are those of :mod:`bench.masking_e2e` (an id, a name, an e-mail, a note with a
phone or card number in some rows, a JSON object), built here as DataRow bytes. A
:class:`~jitgate.protocols.postgres.relay.Relay` is sent ``SELECT * FROM people``, given
its column look-up's answer and the RowDescription, then fed the rows in chunks of
``--chunk`` bytes, as a socket would deliver them. "off" is the same relay with a session
masking whose profile is ``none`` (what a connection without a mask profile gets).
Times are CPU time of this process (``time.process_time``), so that other work on a
shared machine does not count; the best of ``--rounds`` is reported.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import struct
import sys
import time

from jitgate.masking import Masker
from jitgate.policy.types import Decision
from tests.unit.protocols.postgres import wire as w

PEOPLE = 16384
COLUMNS = (("id", 23), ("name", 25), ("email", 25), ("note", 25), ("data", 25))


class Masking:
    """A session's masking with one profile (``none``: masking off)."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self._masker = None if profile == "none" else Masker(profile, key=b"k" * 32)

    def masker(self, profile: str | None) -> Masker | None:
        return self._masker if profile else None

    def profile_for(self, decision: Decision) -> str | None:
        return self.profile


def data_row(*cells: bytes | None) -> bytes:
    body = [struct.pack("!h", len(cells))]
    for cell in cells:
        body.append(b"\xff\xff\xff\xff" if cell is None else struct.pack("!i", len(cell)) + cell)
    return w.frame(b"D", b"".join(body))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()  # as PostgreSQL's md5()


def people_row(g: int) -> bytes:
    """Row ``g`` of the e2e benchmark's ``people`` table, as PostgreSQL sends it (text)."""
    if g % 10 == 0:
        note = f"call +1 415-555-{g % 10000:04d}"
    elif g % 10 == 1:
        note = "card 4111 1111 1111 1111 on file"
    else:
        note = f"order {_md5(str(g))} shipped"
    data = f'{{"k" : {g}, "tag" : "{_md5(str(g * 7))}"}}'
    return data_row(
        str(g).encode(), f"person {g}".encode(), f"user{g}@example.com".encode(),
        note.encode(), data.encode(),
    )  # fmt: skip


def row_description() -> bytes:
    body = [struct.pack("!h", len(COLUMNS))]
    for attnum, (name, type_oid) in enumerate(COLUMNS, 1):
        attributes = struct.pack("!IhIhih", PEOPLE, attnum, type_oid, -1, -1, 0)
        body.append(name.encode() + b"\0" + attributes)
    return w.frame(b"T", b"".join(body))


def lookup_answer() -> bytes:
    rows = [["r", '"people"', str(PEOPLE), "public", "people", "r", None]]
    rows += [
        ["a", None, str(PEOPLE), str(i), name, str(type_oid), None]
        for i, (name, type_oid) in enumerate(COLUMNS, 1)
    ]
    data = b"".join(data_row(*(None if c is None else c.encode() for c in row)) for row in rows)
    return (
        w.ParseComplete() + w.BindComplete() + data + w.CommandComplete(f"SELECT {len(rows)}")
        + w.CloseComplete() + w.CloseComplete() + w.ReadyForQuery()
    )  # fmt: skip


def feed(profile: str, stream: bytes, chunk: int) -> tuple[float, int]:
    """Seconds to relay ``stream`` after the statement and its look-up; bytes out."""
    relay, _ = w.make_relay({}, masking=Masking(profile))
    sent = relay.client_data(w.Query("SELECT * FROM people"))
    if b"jitgate_columns" in sent:
        relay.server_data(lookup_answer())
    relay.server_data(row_description())
    out = 0
    started = time.process_time()
    for pos in range(0, len(stream), chunk):
        out += len(relay.server_data(stream[pos : pos + chunk]))
    elapsed = time.process_time() - started
    relay.server_data(w.CommandComplete("SELECT 0") + w.ReadyForQuery())
    return elapsed, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="pii")
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--cprofile", action="store_true", help="profile one masked round")
    args = parser.parse_args()
    stream = b"".join(people_row(g) for g in range(1, args.rows + 1))
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        feed(args.profile, stream, args.chunk)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in ("none", args.profile):
            elapsed, _out = feed(name, stream, args.chunk)
            best[name] = min(best.get(name, elapsed), elapsed)
    mb = len(stream) / 1e6
    print(f"{args.rows} rows, {mb:.1f} MB of DataRows, best of {args.rounds}\n")
    print("| relay | µs/row | MB/s |")
    print("|---|---:|---:|")
    for name, seconds in best.items():
        label = "masking off" if name == "none" else f"masking on ({name})"
        print(f"| {label} | {seconds / args.rows * 1e6:.2f} | {mb / seconds:.0f} |")


if __name__ == "__main__":
    main()
