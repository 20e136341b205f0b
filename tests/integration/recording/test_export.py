"""The audit export: JSON Lines to a file, syslog (RFC 5424, UDP and TCP) or a signed
webhook; at least once, resumable from its cursor without gaps or endless repeats."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jitgate.access.notify import verify_jitgate_signature
from jitgate.recording import export
from jitgate.recording.export import (
    Cursor,
    Exporter,
    FileCursor,
    FileSink,
    Record,
    StoreSource,
    open_sink,
)
from tests.fixtures.postgres_gateway import PgGateway
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def gw(make_pg_gateway: Callable[..., PgGateway]) -> PgGateway:
    return make_pg_gateway()


def _sessions(gw: PgGateway, cluster: PgCluster, count: int, statements: int = 3) -> set[str]:
    """Run ``count`` sessions; return the export ids their recordings must produce."""
    name = gw.add_connection(cluster).name
    ids: set[str] = set()
    for _ in range(count):
        with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
            for i in range(statements):
                conn.execute(f"SELECT {i}")
        row = gw.session(name)
        ids |= {f"{row.id}:{e['seq']}" for e in gw.events(row)}
    return ids


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["export_id"] for line in path.read_text().splitlines()]


class FailingOnce:
    """Wraps a sink or cursor store: the n-th call of ``method`` raises OSError once."""

    def __init__(self, inner: Any, method: str, n: int) -> None:
        self.inner, self.method, self.n, self.calls = inner, method, n, 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name != self.method:
            return target

        def call(*args: Any) -> Any:
            self.calls += 1
            if self.calls == self.n:
                raise OSError("simulated crash")
            return target(*args)

        return call


def test_export_resumes_after_restart_without_gaps_or_endless_repeats(
    gw: PgGateway, pg_scram: PgCluster, tmp_path: Path
) -> None:
    expected = _sessions(gw, pg_scram, 4)
    source = StoreSource(gw.gateway.store, gw.gateway.paths.recordings)
    out, cursor_file = tmp_path / "audit.jsonl", tmp_path / "cursor"

    # 1. The sink fails on the third batch (not acknowledged): the run stops there.
    sink = FailingOnce(FileSink(out), "send", 3)
    with pytest.raises(OSError):
        Exporter(source, sink, FileCursor(cursor_file), batch=7).run_once()  # type: ignore[arg-type]
    first = _ids(out)
    assert len(first) == 14

    # 2. "Restart": new objects, the cursor from the file. The fourth batch is delivered but
    #    the process dies before its cursor is saved.
    cursors = FailingOnce(FileCursor(cursor_file), "save", 2)
    with pytest.raises(OSError):
        Exporter(source, FileSink(out), cursors, batch=7).run_once()  # type: ignore[arg-type]

    # 3. Restart again and finish; then once more, with nothing new.
    assert Exporter(source, FileSink(out), FileCursor(cursor_file), batch=7).run_once() > 0
    assert Exporter(source, FileSink(out), FileCursor(cursor_file), batch=7).run_once() == 0
    ids = _ids(out)
    session_ids = [i for i in ids if not i.startswith("admin:")]
    assert set(session_ids) == expected  # no gap
    repeats = [i for i in set(ids) if ids.count(i) > 1]
    assert 0 < len(repeats) <= 7  # only the batch whose cursor was never saved

    # New sessions later: exported from where it stopped, nothing old again.
    more = _sessions(gw, pg_scram, 1)
    before = len(ids)
    Exporter(source, FileSink(out), FileCursor(cursor_file), batch=7).run_once()
    new = _ids(out)[before:]
    assert {i for i in new if not i.startswith("admin:")} == more  # nothing old again
    # in order: each session's events by seq
    records = [json.loads(line) for line in out.read_text().splitlines()[before:]]
    seqs = [r["seq"] for r in records if r["source"] == "session"]
    assert seqs == list(range(1, len(seqs) + 1))


def test_cli_export_through_the_api_with_a_cursor_file(
    pg_gateway: PgGateway,
    pg_scram: PgCluster,
    console: Console,
    tmp_path: Path,
) -> None:
    expected = _sessions(pg_gateway, pg_scram, 2)
    out, cursor = tmp_path / "audit.jsonl", tmp_path / "cursor"
    args = ("audit", "export", "--to", f"file:{out}", "--cursor-file", str(cursor), "--batch", "50")
    done = console.cli(*args, check=True)
    assert "exported" in done.stderr
    first = _ids(out)
    assert expected <= set(first) and len(first) == len(set(first))
    more = _sessions(pg_gateway, pg_scram, 1)
    console.cli(*args, check=True)
    second = _ids(out)[len(first) :]
    assert {i for i in second if not i.startswith("admin:")} == more  # only what is new
    assert Cursor.decode(cursor.read_text().strip()).session is not None

    # A second export on the same cursor file while one runs: refused, nothing sent twice.
    held = FileCursor(cursor)
    assert held.acquire()
    busy = console.cli(*args)
    assert busy.returncode == 1 and "another export is using" in busy.stderr
    held.release()
    # A webhook without its signing secret does not start.
    unsigned = console.cli("audit", "export", "--to", "http://127.0.0.1:9/hook",
                           "--cursor-file", str(tmp_path / "hook.cursor"))  # fmt: skip
    assert unsigned.returncode == 1 and "needs a signing secret" in unsigned.stderr


# ------------------------------------------------------------------------ syslog


_RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) jitgate (?P<pid>\d+) (?P<msgid>\S+) "
    rb'\[jitgate@32473 export_id="(?P<id>[^"]*)"\] (?P<msg>\{.*\})$',
    re.S,
)


def _records(gw: PgGateway, cluster: PgCluster) -> list[Record]:
    name = gw.add_connection(cluster, tags={"env": "prod"}).name
    with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE nothing_here")
    row = gw.session(name)
    source = StoreSource(gw.gateway.store, gw.gateway.paths.recordings)
    records, _ = source.fetch(Cursor(admin=10**9), 10000)
    return [r for r in records if r.get("session") == row.id]


def test_syslog_over_udp_and_tcp(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    records = _records(pg_gateway, pg_scram)
    assert records

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    sink = open_sink(f"syslog://127.0.0.1:{udp.getsockname()[1]}")
    sink.send(records)
    sink.close()
    datagrams = [udp.recv(65535) for _ in records]
    udp.close()

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(5)
    received = bytearray()

    def serve() -> None:
        conn, _ = tcp.accept()
        conn.settimeout(5)
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=serve)
    thread.start()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{tcp.getsockname()[1]}")
    sink.send(records)
    sink.close()
    thread.join(10)
    tcp.close()
    frames = []
    data = bytes(received)
    while data:  # RFC 6587 octet counting: "LEN SP MSG"
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)])
        data = rest[int(length) :]

    for messages in (datagrams, frames):
        assert len(messages) == len(records)
        parsed = []
        for message in messages:
            match = _RFC5424.match(message)
            assert match, message[:200]
            body = json.loads(match["msg"])
            assert body["export_id"] == match["id"].decode()
            parsed.append((int(match["pri"]), body))
        assert [b["export_id"] for _p, b in parsed] == [r["export_id"] for r in records]
        priorities = {b.get("decision"): p for p, b in parsed if b.get("type") == "request"}
        assert priorities == {"allow": 13 * 8 + 6, "deny": 13 * 8 + 5}


def test_syslog_udp_message_too_long_for_a_datagram_is_still_json() -> None:
    """A statement of 100 kB with a big sample: over UDP the record is shortened to fit
    one datagram (the sample dropped, the text cut and marked); TCP sends it whole."""
    record: Record = {
        "export_id": "s-9:2", "source": "session", "session": "s-9", "seq": 2,
        "type": "request", "at": "2026-11-29T10:00:00+00:00", "decision": "allow",
        "text": "SELECT '" + "é" * 50000 + "'",
        "sample": {"rows": [["x" * 5000]] * 5},
    }  # fmt: skip
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    sink = open_sink(f"syslog://127.0.0.1:{udp.getsockname()[1]}")
    sink.send([record])
    sink.close()
    datagram = udp.recv(65535)
    udp.close()
    assert len(datagram) <= export.MAX_UDP_MESSAGE
    match = _RFC5424.match(datagram)
    assert match, datagram[:200]
    body = json.loads(match["msg"])
    assert body["truncated"] == ["sample", "text"] and "sample" not in body
    assert body["text"].startswith("SELECT 'éé") and body["text"].endswith("…")
    assert (body["export_id"], body["decision"]) == ("s-9:2", "allow")


# ----------------------------------------------------------------------- webhook


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]], list[int]]]:
    got: list[tuple[dict[str, str], bytes]] = []
    statuses: list[int] = [500]  # first answer fails, then 200

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = statuses.pop(0) if statuses else 200
            if status == 200:
                got.append((dict(self.headers), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/audit", got, statuses
    finally:
        server.shutdown()
        server.server_close()


def test_signed_webhook_is_retried_until_acknowledged(
    gw: PgGateway,
    pg_scram: PgCluster,
    tmp_path: Path,
    receiver: tuple[str, list[tuple[dict[str, str], bytes]], list[int]],
) -> None:
    url, got, _statuses = receiver
    expected = _sessions(gw, pg_scram, 1)
    source = StoreSource(gw.gateway.store, gw.gateway.paths.recordings)
    sink = open_sink(url, secret=b"s3cret-hmac-key")
    cursors = FileCursor(tmp_path / "cursor")
    with pytest.raises(OSError, match="HTTP 500"):
        Exporter(source, sink, cursors).run_once()
    assert not got and cursors.load() == Cursor()
    assert Exporter(source, sink, cursors).run_once() >= len(expected)
    sink.close()
    ((headers, body),) = got
    assert verify_jitgate_signature(
        "s3cret-hmac-key", headers["X-Jitgate-Timestamp"], headers["X-Jitgate-Signature"], body
    )
    assert not verify_jitgate_signature(
        "other-key", headers["X-Jitgate-Timestamp"], headers["X-Jitgate-Signature"], body
    )
    lines = [json.loads(line) for line in body.splitlines()]
    assert expected <= {r["export_id"] for r in lines}


def test_export_targets_are_checked() -> None:
    for bad in ("ftp://x", "http://example.com/hook", "syslog://", "file:"):
        with pytest.raises(ValueError):
            open_sink(bad)
    for hook in ("https://audit.example.com/in", "http://127.0.0.1:9/in"):
        with pytest.raises(ValueError, match="needs a signing secret"):
            open_sink(hook)
        open_sink(hook, secret=b"k").close()


def test_cli_export_registers_as_a_consumer_that_retention_waits_for(
    pg_gateway: PgGateway,
    pg_scram: PgCluster,
    console: Console,
    tmp_path: Path,
    forget_consumers: None,
) -> None:
    _sessions(pg_gateway, pg_scram, 2)
    out, cursor = tmp_path / "audit.jsonl", tmp_path / "cursor"
    args = ("audit", "export", "--to", f"file:{out}", "--cursor-file", str(cursor),
            "--batch", "50", "--consumer", "cli-siem")  # fmt: skip
    console.cli(*args, check=True)
    listed = json.loads(console.cli("audit", "consumers", "list", "-o", "json", check=True).stdout)
    assert [c["name"] for c in listed] == ["cli-siem"]
    # The server learns a position when the exporter presents the cursor it saved: after
    # the next run, the one the first run ended on.
    saved = Cursor.decode(cursor.read_text().strip())
    console.cli(*args, check=True)
    (again,) = json.loads(console.cli("audit", "consumers", "list", "-o", "json").stdout)
    assert again["position"] == saved.closed and again["position"] > 0
    last_seen = datetime.fromisoformat(again["last_seen"])
    assert last_seen > datetime.fromisoformat(listed[0]["last_seen"])
    table = console.cli("audit", "consumers", "list", check=True).stdout
    assert "cli-siem" in table and str(saved.closed) in table

    removed = console.cli("audit", "consumers", "rm", "cli-siem", check=True)
    assert "removed" in removed.stdout
    assert json.loads(console.cli("audit", "consumers", "list", "-o", "json").stdout) == []
    missing = console.cli("audit", "consumers", "rm", "cli-siem")
    assert missing.returncode == 1 and "no audit export consumer" in missing.stderr
