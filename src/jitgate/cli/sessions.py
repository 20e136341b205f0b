"""``jitgate sessions list|show|replay|hold|lost`` and ``jitgate audit verify|export|consumers``."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from jitgate.cli.client import APIClient, CLIError
from jitgate.cli.output import OutputFormat, emit_json, emit_list
from jitgate.recording import replay as rp

Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]
Server = Annotated[str | None, typer.Option("--server", help="API URL (JITGATE_SERVER)")]

SESSION_COLUMNS = [
    "id",
    "identity",
    "actor",
    "connection",
    "client_program",
    "started_at",
    "ended_at",
    "counts",
]


def _events(client: APIClient, session_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.request(
            "GET",
            f"/api/v1/sessions/{session_id}/events",
            params={"after": after, "limit": 10000},
        )["items"]
        events.extend(page)
        if len(page) < 10000:
            return events
        after = page[-1]["seq"]


def sessions_list(
    identity: Annotated[str | None, typer.Option("--identity")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="the agent acting")] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    decision: Annotated[
        str | None, typer.Option("--decision", help="with a request so decided (deny, …)")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time")] = None,
    search: Annotated[str | None, typer.Option("--search", help="text in the recording")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only open sessions")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List sessions, newest first."""
    params: dict[str, Any] = {"limit": min(limit, 500)}
    for key, value in (
        ("identity", identity),
        ("actor", actor),
        ("connection", connection),
        ("decision", decision),
        ("since", since),
        ("until", until),
        ("q", search),
    ):
        if value:
            params[key] = value
    if open_only:
        params["open"] = True
    rows = APIClient.from_env(server).paged("/api/v1/sessions", params, limit=limit)
    emit_list(rows, SESSION_COLUMNS, output)


def sessions_show(
    session_id: str, server: Server = None, output: Output = OutputFormat.TABLE
) -> None:
    """A session as a timeline: each statement or SSH command, file operation and port
    forward, its decision and its result (rows, exit status)."""
    client = APIClient.from_env(server)
    session = client.request("GET", f"/api/v1/sessions/{session_id}")
    # A recording retention deleted, one never kept and one declared lost have no events:
    # the session's own record is still shown.
    gone = session.get("recording") in ("deleted", "off", "lost")
    events = [] if gone else _events(client, session_id)
    if output is OutputFormat.JSON:
        emit_json({"session": session, "events": events})
        return
    typer.echo(
        f"  {session['started_at']} – {session['ended_at'] or 'open'}"
        f" ({session['end_reason'] or ''}); {session['bytes_in']} bytes in, "
        f"{session['bytes_out']} bytes out; recording {session.get('recording')}"
        f"{', signed' if session.get('signed') else ''}"
    )
    typer.echo(rp.timeline(events), nl=False)


class ReplayFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    ASCIICAST = "asciicast"


def sessions_replay(
    session_id: str,
    speed: Annotated[float, typer.Option("--speed", min=0.01, help="2 = twice as fast")] = 1.0,
    skip_idle: Annotated[
        float | None,
        typer.Option("--skip-idle", min=0.0, help="cap pauses at this many seconds"),
    ] = None,
    output: Annotated[
        ReplayFormat, typer.Option("--output", "-o", help="text, json or asciicast")
    ] = ReplayFormat.TEXT,
    server: Server = None,
) -> None:
    """Replay a session (terminal: original timing; database: timeline with masked rows)."""
    events = _events(APIClient.from_env(server), session_id)
    if output is ReplayFormat.JSON:
        emit_json(events)
        return
    if output is ReplayFormat.ASCIICAST:
        sys.stdout.write(rp.asciicast(events))
        return
    out = sys.stdout
    for delay, (_t, stream, data) in rp.schedule(
        rp.frames(events), speed=speed, idle_limit=skip_idle
    ):
        if stream != "o":
            continue
        if delay > 0:
            out.flush()
            time.sleep(delay)
        out.write(data.replace("\r\n", "\n") if not rp.is_terminal(events) else data)
    out.flush()


def audit_verify(
    session_id: str,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="check a recording file offline (JSON Lines or a JSON array)"),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option("--keys", help="JWKS file with the gateway's keys (default: from the API)"),
    ] = None,
    server: Server = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check a recording's hash chain and signed seal; names the first altered event.

    Prints the recording's state: normal (sealed at close), recovered (sealed when a
    crashed gateway's session was recovered), interrupted (closed by recovery without a
    seal: intact, but its end is not proven), open (still recording), or tampered.
    Exits 0, or 1 when tampered, or 3 when interrupted (nothing altered, but the end of
    the recording cannot be proven).
    """
    client = APIClient.from_env(server)
    if file is None:
        result = client.request("GET", f"/api/v1/sessions/{session_id}/verify")
    else:
        result = _verify_offline(client, session_id, file, keys)
    if output is OutputFormat.JSON:
        emit_json(result)
    state = result.get("state") or ("normal" if result["valid"] else "tampered")
    if result["valid"] and state == "interrupted":
        if output is not OutputFormat.JSON:
            typer.echo(f"session {session_id}: {state}: {_STATES[state]}", err=True)
        raise typer.Exit(3)
    if result["valid"]:
        if output is not OutputFormat.JSON:
            typer.echo(f"session {session_id}: {state}: {_STATES.get(state, state)} "
                       f"({result['events']} events)")  # fmt: skip
        return
    where = f"event {result['first_bad_event']}" if result.get("first_bad_event") else "recording"
    raise CLIError(f"session {session_id}: tampered: {where}: {result['problem']}")


_STATES = {
    "normal": "recording intact, signed at close",
    "recovered": "recording intact, signed at recovery after a gateway crash",
    "interrupted": "chain intact but not sealed (the gateway stopped and the recording was "
    "not sealed at recovery): events at its end could be missing without trace",
    "open": "session still open, recording intact so far (sealed when it closes)",
}


def _verify_offline(
    client: APIClient, session_id: str, file: Path, keys: Path | None
) -> dict[str, Any]:
    import json
    import tempfile

    from jitgate.recording.seal import verify_recording

    try:
        jwks = (
            json.loads(keys.read_text())
            if keys
            else client.request("GET", "/api/v1/keys", auth=False)
        )
        text = file.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {exc}") from None
    by_kid = {k["kid"]: k for k in jwks.get("keys", []) if isinstance(k, dict) and "kid" in k}
    if text.lstrip().startswith("["):  # events as printed by `sessions replay -o json`
        events = json.loads(text)
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.jsonl"
        path.write_text(text, encoding="utf-8")
        return verify_recording(path, session_id, by_kid).as_dict()


def audit_export(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="file:PATH, stdout, syslog+tcp://HOST:PORT, an https:// webhook, or "
            "syslog://HOST:PORT (UDP: records a receiver misses are lost; prefer syslog+tcp)",
        ),
    ],
    cursor_file: Annotated[
        Path | None,
        typer.Option("--cursor-file", help="where the position is kept between runs"),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="keep exporting new events")] = False,
    secret_env: Annotated[
        str, typer.Option("--secret-env", help="variable holding the webhook HMAC key")
    ] = "JITGATE_EXPORT_SECRET",  # noqa: S107 - the name of a variable
    batch: Annotated[int, typer.Option("--batch", min=1, max=5000)] = 500,
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer",
            help="register this export under a name: retention then keeps every recording "
            "it has not exported yet (see `audit consumers`)",
        ),
    ] = None,
    server: Server = None,
) -> None:
    """Export audit events as JSON Lines, at least once, resuming from a cursor file.

    The stream holds administrative actions and the events of closed session recordings.
    Without --consumer the gateway does not know how far this export has got, and its
    retention may delete recordings before they are exported.
    """
    import os

    from jitgate.recording.export import APISource, Exporter, FileCursor, open_sink

    client = APIClient.from_env(server)
    secret = os.environ.get(secret_env)
    try:
        sink = open_sink(to, secret=secret.encode() if secret else None)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cursor_path = cursor_file or Path(".jitgate-export.cursor")
    cursors = FileCursor(cursor_path)
    exporter = Exporter(APISource(client.request, consumer=consumer), sink, cursors, batch=batch)
    if not cursors.acquire():
        sink.close()
        raise CLIError(f"another export is using {cursor_path}")
    try:
        while True:
            sent = exporter.run_once()
            if not follow:
                if to != "stdout":
                    typer.echo(f"exported {sent} events; cursor in {cursor_path}", err=True)
                return
            if not sent:
                time.sleep(2)
    except OSError as exc:
        raise CLIError(f"export stopped: {exc}") from None
    finally:
        sink.close()
        cursors.release()


def sessions_hold(
    session_id: str,
    release: Annotated[bool, typer.Option("--release", help="lift the hold")] = False,
    server: Server = None,
) -> None:
    """Put a session's recording under legal hold (never deleted by retention)."""
    APIClient.from_env(server).request(
        "PUT", f"/api/v1/sessions/{session_id}/legal-hold", json_body={"hold": not release}
    )
    typer.echo(f"session {session_id}: legal hold {'released' if release else 'set'}")


def sessions_lost(
    session_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why it is lost (kept in the audit log)")],
    server: Server = None,
) -> None:
    """Declare a closed session's unreadable recording lost for good, so that the audit
    export stops waiting for it (it sends a ``recording.lost`` record in its place)."""
    APIClient.from_env(server).request(
        "POST", f"/api/v1/sessions/{session_id}/lost", json_body={"reason": reason}
    )
    typer.echo(f"session {session_id}: recording marked lost")


consumers_app = typer.Typer(
    help="Named export consumers: retention keeps what they have not exported.",
    no_args_is_help=True,
)


@consumers_app.command("list")
def consumers_list(server: Server = None, output: Output = OutputFormat.TABLE) -> None:
    """The registered consumers: POSITION is the close number below which each has every
    session; retention deletes nothing at or after the lowest."""
    rows = APIClient.from_env(server).request("GET", "/api/v1/audit/consumers")["items"]
    emit_list(rows, ["name", "position", "admin", "last_seen"], output)


@consumers_app.command("rm")
def consumers_rm(name: str, server: Server = None) -> None:
    """Forget a consumer (one no longer running): retention stops waiting for it."""
    APIClient.from_env(server).request("DELETE", f"/api/v1/audit/consumers/{name}")
    typer.echo(f"audit consumer {name} removed")


def register(sessions_app: typer.Typer, audit_app: typer.Typer) -> None:
    """Add these commands to the ``sessions`` and ``audit`` groups of the CLI."""
    sessions_app.command("list")(sessions_list)
    sessions_app.command("show")(sessions_show)
    sessions_app.command("replay")(sessions_replay)
    sessions_app.command("hold")(sessions_hold)
    sessions_app.command("lost")(sessions_lost)
    audit_app.command("verify")(audit_verify)
    audit_app.command("export")(audit_export)
    audit_app.add_typer(consumers_app, name="consumers")
