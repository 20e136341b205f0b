"""Events encoded from an EventShape are byte for byte those of EventLog.append."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from jitgate.recording.log import EventLog, EventShape, read_events, verify_chain

AT_NS = 1_765_000_000_123_456_789

TRICKY = [
    "SELECT 1",
    "SELECT '100%' AS \"%s\", '%d' -- %%",
    'quote " backslash \\ newline \n tab \t nul \x00',
    "unicode: ÄÖÜ ✓ 日本 \U0001f600",
    '"jitgate-slot-0"',  # looks like a slot, without the nonce
]


def _pair(tmp_path: Path, name: str) -> tuple[EventLog, EventLog]:
    return (
        EventLog(tmp_path / f"{name}-dict.jsonl", "s1"),
        EventLog(tmp_path / f"{name}-shaped.jsonl", "s1"),
    )


@pytest.mark.parametrize("text", TRICKY)
def test_request_event_bytes_match(tmp_path: Path, text: str) -> None:
    fixed: dict[str, Any] = {
        "via": "query",
        "decision": "deny",
        "policies": ["p%1", text],
        "reason": text,
        "tables_read": [text, "public.t"],
    }
    shape = EventShape("request", fixed, ("request", "text"), frozenset({"request"}))
    plain, shaped = _pair(tmp_path, "request")
    for seq in range(1, 4):
        plain.append("request", {**fixed, "request": seq, "text": text}, AT_NS + seq)
        shaped.append_shaped(shape, (seq, orjson.dumps(text)), AT_NS + seq)
    for log in (plain, shaped):
        log.close()
    assert shaped.path.read_bytes() == plain.path.read_bytes()
    assert verify_chain(shaped.path, "s1") == (True, None, None)
    assert [event["text"] for event in read_events(shaped.path)] == [text] * 3


def test_result_event_bytes_match_across_a_second(tmp_path: Path) -> None:
    fixed = {"columns": ["a", "b%"]}
    fields = ("request", "status", "rows", "duration_ms", "sample")
    shape = EventShape("result", fixed, fields, frozenset({"request", "rows"}))
    sample = {"columns": ["a", "b%"], "rows": [["1", None], ["✓", "%s"]], "truncated": True}
    plain, shaped = _pair(tmp_path, "result")
    for seq, at_ns in enumerate((AT_NS, AT_NS + 10**9, AT_NS + 86_400 * 10**9), start=1):
        data = {**fixed, "request": seq, "status": "ok", "rows": 2, "duration_ms": 0.125}
        data["sample"] = sample
        plain.append("result", data, at_ns)
        values = (seq, b'"ok"', 2, orjson.dumps(0.125), orjson.dumps(sample))
        shaped.append_shaped(shape, values, at_ns)
    for log in (plain, shaped):
        log.close()
    assert shaped.path.read_bytes() == plain.path.read_bytes()
    assert verify_chain(shaped.path, "s1") == (True, None, None)


def test_shaped_and_plain_events_chain_together(tmp_path: Path) -> None:
    shape = EventShape("request", {"via": "query"}, ("request", "text"), frozenset({"request"}))
    log = EventLog(tmp_path / "mixed.jsonl", "s1")
    log.append("session.start", {"session": "s1"})
    log.append_shaped(shape, (1, b'"SELECT 1"'))
    log.append("review", {"request": 2})
    log.append_shaped(shape, (2, b'"SELECT 2"'))
    log.close()
    assert verify_chain(log.path, "s1") == (True, None, None)
    # an edited shaped event is named
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"SELECT 2", b"SELECT 3")
    log.path.write_bytes(b"".join(lines))
    assert verify_chain(log.path, "s1") == (False, 4, "event content does not match its hash")


def test_a_member_both_fixed_and_variable_is_refused() -> None:
    with pytest.raises(ValueError):
        EventShape("request", {"text": "x"}, ("request", "text"), frozenset())
    with pytest.raises(ValueError):
        EventShape("request", {"seq": 1}, ("request",), frozenset())
