"""Turning a recording's events back into what happened: a timeline, an asciicast, frames.

Pure functions over the list of events (as stored, or as the API returns them):

* :func:`timeline` — a session as text: each statement with its time, decision, outcome
  and the sample of rows the client was sent (already masked); for an SSH session each
  channel (shell, exec command, scp, sftp) with its decision and exit status, each typed
  line, file operation and port forward.
* :func:`frames` — ``(seconds, stream, data)`` frames: a terminal session's own ``term``
  events; for a database session the timeline lines, each at the moment it happened.
* :func:`asciicast` — asciicast v2 (header line, then one JSON array per frame).
* :func:`schedule` — frame delays for a replay at ``speed`` with idle gaps capped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

Frame = tuple[float, str, str]


def is_terminal(events: Sequence[dict[str, Any]]) -> bool:
    return any(e.get("type") == "term" for e in events)


def _at(event: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event["at"]))
    except (KeyError, ValueError):
        return None


def _sample_lines(sample: dict[str, Any]) -> list[str]:
    columns = sample.get("columns") or []
    rows = sample.get("rows") or []
    lines = []
    if columns:
        lines.append(" | ".join(str(c) for c in columns))
    for row in rows:
        lines.append(" | ".join("NULL" if c is None else str(c) for c in row))
    if sample.get("truncated"):
        lines.append("…")
    return lines


def timeline_entries(events: Sequence[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """``(event, line)`` pairs of the text timeline, in order."""
    results = {e["request"]: e for e in events if e.get("type") == "result"}
    for event in events:
        kind = event.get("type")
        if kind == "session.start":
            actor = f" (agent {event['actor_name']})" if event.get("actor_name") else ""
            grants = event.get("grant_ids") or []
            yield (
                event,
                f"session {event.get('session')}: {event.get('identity_name')}{actor} → "
                f"{event.get('connection_name')} from {event.get('client_addr')} "
                f"[{event.get('client_program') or '-'}]"
                + (f" grants {', '.join(grants)}" if grants else ""),
            )
        elif kind == "request":
            result = results.get(event.get("request"), {})
            clock = str(event.get("at", ""))[11:23]
            yield event, f"{clock} {str(event.get('decision', '')).upper():<6} {event.get('text')}"
            if event.get("reason"):
                yield event, f"    reason: {event['reason']}"
            if not result:
                yield event, "    → (no result recorded)"
                continue
            detail = result.get("command_tag") or result.get("status", "")
            if result.get("error"):
                detail = f"ERROR {result['error']['sqlstate']} {result['error']['message']}"
            extra = []
            if result.get("rows") is not None:
                extra.append(f"{result['rows']} rows")
            if result.get("duration_ms") is not None:
                extra.append(f"{result['duration_ms']} ms")
            if result.get("masked_values"):
                extra.append(f"{result['masked_values']} values masked")
            yield result, f"    → {detail}" + (f" ({', '.join(extra)})" if extra else "")
            for line in _sample_lines(result.get("sample") or {}):
                yield result, f"      {line}"
        elif kind == "review":
            yield event, f"    review: {event.get('outcome')} by {', '.join(event.get('by', []))}"
        elif kind == "grants":
            change = [f"+{g}" for g in event.get("added", [])] + [
                f"-{g}" for g in event.get("ended", [])
            ]
            yield event, f"    grants changed: {' '.join(change)}"
        elif kind == "request.refused":
            yield event, f"    refused (event {event.get('event')}): {event.get('reason')}"
        elif kind == "cancel":
            yield event, "    (cancel requested)"
        elif kind is not None and (kind.startswith("ssh.") or kind == "sftp"):
            yield from _ssh_entries(event, kind)
        elif kind == "session.end":
            yield event, f"session ended: {event.get('reason')} counts {event.get('counts')}"
        elif kind == "seal":
            yield event, f"sealed: digest {str(event.get('digest'))[:16]}… key {event.get('kid')}"


def _clock(event: dict[str, Any]) -> str:
    return str(event.get("at", ""))[11:23]


def _decided(event: dict[str, Any], what: str) -> Iterator[tuple[dict[str, Any], str]]:
    """A decided SSH step: its time, decision and what it was; the reason and review."""
    yield event, f"{_clock(event)} {str(event.get('decision', '')).upper():<6} {what}"
    if event.get("reason"):
        yield event, f"    reason: {event['reason']}"
    if event.get("review"):
        yield event, f"    review: {event['review']}"


def _ssh_entries(event: dict[str, Any], kind: str) -> Iterator[tuple[dict[str, Any], str]]:
    """The timeline lines of the SSH listener's events (see jitgate.protocols.ssh)."""
    if kind == "ssh.channel":
        channel = event.get("kind")
        if channel == "exec":
            what = f"exec: {event.get('command')}"
        elif channel == "scp":
            what = f"scp {event.get('mode')} {event.get('path')}"
        elif channel == "sftp":
            what = "sftp session"
        else:
            what = "interactive shell"
        yield from _decided(event, what)
        if event.get("unknown"):
            unknown = event["unknown"]
            yield event, "    not understood" + (f": {unknown}" if isinstance(unknown, str) else "")
    elif kind == "ssh.auth":
        key = f" key {event['key']}" if event.get("key") else ""
        yield event, f"    logged in by {event.get('method')} ({event.get('credential')}){key}"
    elif kind == "ssh.exit":
        if event.get("exit_signal"):
            yield event, f"    → {event.get('kind')} ended by signal {event['exit_signal']}"
        elif event.get("exit_status") is not None:
            yield event, f"    → {event.get('kind')} exit status {event['exit_status']}"
        else:
            yield event, f"    → {event.get('kind')} ended"
    elif kind == "ssh.line":
        if event.get("secret"):
            yield event, f"{_clock(event)} (a line typed at a password prompt, not recorded)"
        else:
            yield from _decided(event, f"$ {event.get('text')}")
            if event.get("uncertain"):
                yield event, f"    uncertain: {', '.join(map(str, event['uncertain']))}"
    elif kind == "sftp":
        path = event.get("path")
        if event.get("to"):
            path = f"{path} → {event['to']}"
        if event.get("op") == "close":
            yield (
                event,
                f"{_clock(event)}        sftp close {path}: {event.get('bytes_written', 0)} "
                f"bytes written, {event.get('bytes_read', 0)} bytes read",
            )
            return
        yield from _decided(event, f"sftp {event.get('op')} {path} ({event.get('mode')})")
        if event.get("status") is not None:
            yield event, f"    → {event['status']}"
    elif kind == "ssh.forward":
        yield from _decided(
            event,
            f"forward to {event.get('host')}:{event.get('port')} (from {event.get('origin')})",
        )
    elif kind == "ssh.remote_forward":
        yield from _decided(event, f"remote forward {event.get('host')}:{event.get('port')}")
    elif kind == "ssh.subsystem":
        yield from _decided(event, f"subsystem {event.get('name')}")
    elif kind == "ssh.env":
        yield event, f"    environment not passed on: {', '.join(event.get('denied', []))}"
    elif kind == "ssh.signal":
        yield event, f"{_clock(event)}        signal {event.get('signal')}"
    else:
        yield event, f"{_clock(event)}        {kind}"


def timeline(events: Sequence[dict[str, Any]]) -> str:
    return "\n".join(line for _event, line in timeline_entries(events)) + "\n"


def frames(events: Sequence[dict[str, Any]]) -> list[Frame]:
    if is_terminal(events):
        return [
            (float(e["t"]), str(e["s"]), str(e["d"]))
            for e in events
            if e.get("type") == "term" and e.get("s") in ("o", "i", "r")
        ]
    start = _at(events[0]) if events else None
    out: list[Frame] = []
    for event, line in timeline_entries(events):
        at = _at(event)
        t = (at - start).total_seconds() if at is not None and start is not None else 0.0
        t = max(t, out[-1][0] if out else 0.0)
        out.append((round(t, 6), "o", line + "\r\n"))
    return out


def asciicast(events: Sequence[dict[str, Any]], *, width: int = 120, height: int = 40) -> str:
    """The session as asciicast v2 text."""
    start = _at(events[0]) if events else None
    for event in events:
        if event.get("type") == "term" and event.get("s") == "r":
            cols, _, rows = str(event.get("d")).partition("x")
            if cols.isdigit() and rows.isdigit():
                width, height = int(cols), int(rows)
            break
    header: dict[str, Any] = {"version": 2, "width": width, "height": height}
    if start is not None:
        header["timestamp"] = int(start.timestamp())
    if events and events[0].get("session"):
        header["title"] = f"jitgate session {events[0]['session']}"
    lines = [json.dumps(header)]
    lines += [json.dumps([t, s, d], ensure_ascii=False) for t, s, d in frames(events)]
    return "\n".join(lines) + "\n"


def schedule(
    frames: Iterable[Frame], *, speed: float = 1.0, idle_limit: float | None = None
) -> Iterator[tuple[float, Frame]]:
    """``(delay before it, frame)``: original timing divided by ``speed``, gaps capped."""
    last = 0.0
    for frame in frames:
        gap = max(0.0, frame[0] - last)
        last = frame[0]
        if idle_limit is not None:
            gap = min(gap, idle_limit)
        yield gap / speed, frame
