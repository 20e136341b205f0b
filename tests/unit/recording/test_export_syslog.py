"""Syslog export: a record too long for one UDP message is shortened, not cut mid-JSON."""

from __future__ import annotations

import json
import re

from jitgate.recording.export import MAX_UDP_MESSAGE, fit_record, syslog_message

BODY = re.compile(rb"^<\d+>1 \S+ \S+ jitgate \d+ \S+ \[jitgate@32473 export_id=\"[^\"]*\"\] ")


def _result(rows: int, text: str = "") -> dict[str, object]:
    return {
        "export_id": "s-1:7", "source": "session", "session": "s-1", "seq": 7,
        "type": "result", "at": "2026-11-29T10:00:00+00:00", "request": 3, "status": "ok",
        "rows": rows, "text": text, "hash": "h" * 64, "prev": "p" * 64,
        "sample": {"columns": ["blob"], "rows": [["x" * 1000] for _ in range(rows)]},
    }  # fmt: skip


def _body(message: bytes) -> dict[str, object]:
    match = BODY.match(message)
    assert match, message[:200]
    parsed: dict[str, object] = json.loads(message[match.end() :])
    return parsed


def test_a_record_that_fits_is_sent_whole() -> None:
    record = _result(3)
    assert fit_record(record, MAX_UDP_MESSAGE) is record
    message = syslog_message(record, "gw", limit=MAX_UDP_MESSAGE)
    assert _body(message) == record


def test_an_oversize_sample_is_dropped_and_the_record_stays_json() -> None:
    record = _result(200)  # a 200 kB sample
    message = syslog_message(record, "gw-host", limit=MAX_UDP_MESSAGE)
    assert len(message) <= MAX_UDP_MESSAGE
    body = _body(message)
    assert body["truncated"] == ["sample"] and "sample" not in body
    assert {k: v for k, v in body.items() if k != "truncated"} == {
        k: v for k, v in record.items() if k != "sample"
    }


def test_long_text_is_shortened_with_a_mark_escapes_and_all() -> None:
    # Control characters and quotes take 2-6 bytes each in JSON; "é" two in UTF-8.
    text = ('SELECT "é\x1b"\n' * 20000)[:150000]
    record = _result(10, text)
    for limit in (MAX_UDP_MESSAGE, 4000, 600):
        message = syslog_message(record, "gw", limit=limit)
        assert len(message) <= limit, limit
        body = _body(message)
        assert body["truncated"] == ["sample", "text"]
        shortened = str(body["text"])
        assert shortened.endswith("…") and text.startswith(shortened[:-1])
        assert (body["export_id"], body["seq"], body["hash"]) == ("s-1:7", 7, "h" * 64)


def test_fields_that_cannot_be_shortened_are_left_out() -> None:
    record = {
        "export_id": "admin:9", "source": "admin", "id": 9, "action": "connection:update",
        "at": "2026-11-29T10:00:00+00:00", "details": {"tags": ["t" * 100] * 100},
        "target_name": "db",
    }  # fmt: skip
    fitted = fit_record(record, 300)
    assert len(json.dumps(fitted, ensure_ascii=False, separators=(",", ":"))) <= 300
    assert fitted["truncated"] == ["details"] and "details" not in fitted
    assert fitted["target_name"] == "db" and fitted["action"] == "connection:update"
    assert "truncated" not in record  # the caller's record is left as it was
