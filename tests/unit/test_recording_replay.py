"""Replay: timelines, asciicast, and the frame schedule (speed, idle cap)."""

from __future__ import annotations

import json

from jitgate.recording.replay import asciicast, frames, schedule, timeline

TERM = [
    {"seq": 1, "type": "session.start", "at": "2026-11-29T10:00:00+00:00", "session": "s"},
    {"seq": 2, "type": "term", "t": 0.0, "s": "r", "d": "100x30"},
    {"seq": 3, "type": "term", "t": 0.5, "s": "o", "d": "$ "},
    {"seq": 4, "type": "term", "t": 1.0, "s": "i", "d": "ls\r"},
    {"seq": 5, "type": "term", "t": 9.0, "s": "o", "d": "a b\r\n"},
]


def test_terminal_frames_and_asciicast_keep_the_original_timing() -> None:
    assert frames(TERM) == [(0.0, "r", "100x30"), (0.5, "o", "$ "), (1.0, "i", "ls\r"),
                            (9.0, "o", "a b\r\n")]  # fmt: skip
    header, *rest = (json.loads(line) for line in asciicast(TERM).splitlines())
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    assert rest[-1] == [9.0, "o", "a b\r\n"]


def test_schedule_applies_speed_and_caps_idle_time() -> None:
    delays = [d for d, _f in schedule(frames(TERM), speed=2)]
    assert delays == [0.0, 0.25, 0.25, 4.0]
    capped = [d for d, _f in schedule(frames(TERM), speed=1, idle_limit=1.0)]
    assert capped == [0.0, 0.5, 0.5, 1.0]


def test_database_timeline() -> None:
    events = [
        {"seq": 1, "type": "session.start", "at": "2026-11-29T10:00:00+00:00", "session": "s",
         "identity_name": "ann", "actor_name": "bot", "connection_name": "db",
         "client_addr": "127.0.0.1", "client_program": "psql", "grant_ids": ["g1"]},
        {"seq": 2, "type": "request", "at": "2026-11-29T10:00:01.250000+00:00", "request": 1,
         "text": "SELECT email FROM t", "decision": "allow"},
        {"seq": 3, "type": "result", "at": "2026-11-29T10:00:01.300000+00:00", "request": 1,
         "status": "ok", "command_tag": "SELECT 1", "rows": 1, "masked_values": 1,
         "sample": {"columns": ["email"], "rows": [["[REDACTED:email]"]]}},
        {"seq": 4, "type": "request", "at": "2026-11-29T10:00:02+00:00", "request": 2,
         "text": "DROP TABLE t", "decision": "deny", "reason": "no"},
        {"seq": 5, "type": "result", "at": "2026-11-29T10:00:02+00:00", "request": 2,
         "status": "denied", "error": {"sqlstate": "42501", "message": "no"}},
    ]  # fmt: skip
    text = timeline(events)
    assert "ann (agent bot) → db from 127.0.0.1 [psql] grants g1" in text
    assert "10:00:01.250 ALLOW  SELECT email FROM t" in text
    assert "→ SELECT 1 (1 rows, 1 values masked)" in text and "[REDACTED:email]" in text
    assert "DENY   DROP TABLE t" in text and "ERROR 42501 no" in text
    times = [t for t, _s, _d in frames(events)]
    assert times[0] == 0.0 and times[-1] == 2.0 and times == sorted(times)
