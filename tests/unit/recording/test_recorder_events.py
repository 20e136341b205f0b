"""A session recorder writes the same bytes whether its events are encoded from shapes
(the fast path) or whole, in the gateway or by the writer process from the records it
is handed: masked, failed, truncated and binary results included."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from jitgate.config import RecordingSettings
from jitgate.policy.types import Decision
from jitgate.protocols.postgres.relay import Execution
from jitgate.recording import encode as encode_module
from jitgate.recording import recorder as recorder_module
from jitgate.recording.encode import SessionEncoder, load_record
from jitgate.recording.handoff import Applier
from jitgate.recording.log import EventLog, read_events, verify_chain
from jitgate.recording.recorder import SessionRecorder
from jitgate.sql.postgres import PostgresClassifier


def _description(*columns: tuple[str, int]) -> bytes:
    out = struct.pack("!H", len(columns))
    for name, fmt in columns:
        out += name.encode() + b"\0" + struct.pack("!IhIhih", 16397, 2, 23, 4, -1, fmt)
    return out


def _row(*cells: bytes | None) -> bytes:
    out = struct.pack("!H", len(cells))
    for cell in cells:
        out += struct.pack("!i", -1) if cell is None else struct.pack("!i", len(cell)) + cell
    return out


TEXT = _description(("id", 0), ("name %s", 0))
BINARY = _description(("blob", 1))
ALLOW = Decision.allow("default-allow")
DENY = Decision.deny('no "writes" here: 100%', "builtin:deny")


class _Spool:
    """Stands in for the writer process's hand-off: keeps the records, marshalled as
    they would go through the spool ring, for an :class:`Applier` to apply."""

    alive = True

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def put_bytes(self, record: bytes) -> bool:
        self.records.append(record)
        return True


def _session(path: Path, monkeypatch: pytest.MonkeyPatch, spool: _Spool | None = None) -> None:
    clock = itertools.count(1_765_000_000_000_000_000, 123_456_789)
    monkeypatch.setattr(recorder_module.time, "time_ns", lambda: next(clock))
    monkeypatch.setattr(recorder_module, "_time_ns", recorder_module.time.time_ns)
    classify = PostgresClassifier().classify
    owner = SimpleNamespace(settings=RecordingSettings(sample_rows=2, sample_bytes=4096))
    if spool is None:
        recorder = SessionRecorder(cast(Any, owner), "s1", EventLog(path, "s1"))
    else:
        handoff = cast(Any, spool)
        recorder = SessionRecorder(cast(Any, owner), "s1", None, handoff=handoff, path=path)
    results: list[tuple[str, Decision, bytes | None, list[bytes], dict[str, Any]]] = [
        ("SELECT id, name FROM t WHERE id = 1", ALLOW, TEXT, [_row(b"1", '✓"%'.encode())], {}),
        ("SELECT id, name FROM t WHERE id = 2", ALLOW, TEXT, [_row(b"2", None)] * 3, {}),
        ("SELECT blob FROM t", ALLOW, BINARY, [_row(b"\x00\xff")], {"result_formats": (1,)}),
        ("SELECT id, name FROM t WHERE id = 3", ALLOW, TEXT, [_row(b"3", b"x")], {"masked": 2}),
        ("UPDATE t SET name = 'y'", ALLOW, None, [], {"tag": "UPDATE 4", "rows": None}),
        ("SELECT 1/0", ALLOW, None, [], {"error": ("22012", "division by zero")}),
        ("DELETE FROM t", DENY, None, [], {"status": "denied", "tag": None}),
        ("SELECT id, name FROM t WHERE id = 4", ALLOW, TEXT, [], {"finished": False}),
    ]
    for seq, (text, decision, description, rows, extra) in enumerate(results * 2, start=1):
        statement = classify(text).statements[0]
        execution = Execution(seq, text, statement, decision, "query")
        recorder.started(execution)
        recorder.flush()
        execution.row_description = description
        execution.result_formats = extra.get("result_formats", ())
        for row in rows:
            if execution.row_sink is not None:
                execution.row_sink(row)
        execution.rows = extra.get("rows", len(rows))
        execution.masked_values = extra.get("masked", 0)
        execution.error = extra.get("error")
        execution.status = extra.get("status", "error" if execution.error else "ok")
        execution.tag = extra.get("tag", f"SELECT {len(rows)}")
        if extra.get("finished", True):
            execution.finished_ns = execution.started_ns + 1_234_567
        recorder.finished(execution)
    if spool is not None:
        applier = Applier(lambda session: path)
        for record in spool.records:
            applier.apply(load_record(record))
        applier.flush()
        applier.close_all()
        return
    recorder._timed_flush()
    assert recorder.log is not None
    recorder.log.close()


def test_shaped_events_are_the_whole_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _session(tmp_path / "shaped.jsonl", monkeypatch)
    # Without shapes: every event encoded whole by EventLog.append.
    # Handed to a writer as records, applied there: the same bytes again.
    _session(tmp_path / "writer.jsonl", monkeypatch, _Spool())
    monkeypatch.setattr(SessionEncoder, "_result_shape", lambda self, key: None)

    def no_shape(*args: Any) -> None:
        raise ValueError("no shapes")

    monkeypatch.setattr(encode_module, "EventShape", no_shape)
    _session(tmp_path / "whole.jsonl", monkeypatch)
    shaped = (tmp_path / "shaped.jsonl").read_bytes()
    assert shaped == (tmp_path / "whole.jsonl").read_bytes()
    assert shaped == (tmp_path / "writer.jsonl").read_bytes()
    assert verify_chain(tmp_path / "shaped.jsonl", "s1") == (True, None, None)

    events = list(read_events(tmp_path / "shaped.jsonl"))
    assert [e["type"] for e in events[:4]] == ["request", "result", "request", "result"]
    first = events[1]
    assert first["sample"] == {"columns": ["id", "name %s"], "rows": [["1", '✓"%']]}
    assert events[3]["sample"]["truncated"] is True and len(events[3]["sample"]["rows"]) == 2
    assert events[5]["sample"]["rows"] == [["\\x00ff"]]
    assert events[7]["masked_values"] == 2
    assert events[11]["error"] == {"sqlstate": "22012", "message": "division by zero"}
    assert events[12]["decision"] == "deny" and events[12]["reason"] == DENY.reason
    assert "duration_ms" not in events[15]
