"""An approved held statement in the recording and the audit export of a real `jitgate
serve`: the review event names who approved it, `jitgate sessions show` prints it, and
`jitgate audit export --to stdout` streams it as JSON Lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_jit_access import Env, _run_in_thread, env

__all__ = ["env"]  # the served gateway, its PostgreSQL and alice, bob and admin tokens

pytestmark = pytest.mark.postgres


def events(env: Env, session_id: str) -> list[dict[str, Any]]:
    shown = json.loads(env.cli("admin", "sessions", "show", session_id, "-o", "json").stdout)
    found: list[dict[str, Any]] = shown["events"]
    return found


def test_approved_statement_records_the_approver_and_exports_to_stdout(env: Env) -> None:
    with env.connect("alice", application_name="held-approved") as conn:
        thread, box = _run_in_thread(lambda: conn.execute("DELETE FROM t").rowcount)
        request = env.pending("alice")
        env.cli("bob", "requests", "approve", request["id"], "--comment", "go ahead")
        thread.join(30)
        assert box.get("result") == 10, box
    sessions = json.loads(env.cli("admin", "sessions", "list", "-o", "json").stdout)
    [session] = [s for s in sessions if s["client_program"] == "held-approved"]
    sid = session["id"]
    [review] = [e for e in events(env, sid) if e.get("type") == "review"]
    assert review["outcome"] == "allow" and "DELETE FROM t" in review["text"]
    assert f"approved-request:{request['id']}" in review["by"]
    assert "approved-by:bob" in review["by"]  # who approved, not only the request id
    timeline = env.cli("admin", "sessions", "show", sid).stdout
    assert "approved-by:bob" in timeline, timeline

    # The export to stdout: JSON Lines, the approval among the admin actions, the
    # statement's review in the session's events; a second run with the cursor is empty.
    cursor = env.data_dir.parent / "export.cursor"
    first = env.cli("admin", "audit", "export", "--to", "stdout", "--cursor-file", str(cursor))
    records = [json.loads(line) for line in first.stdout.splitlines()]
    assert records and all(isinstance(r, dict) for r in records)
    text = first.stdout
    assert request["id"] in text and "request:approve" in text
    exported_reviews = [r for r in records if r.get("type") == "review"
                        and r.get("session_id", sid) == sid]  # fmt: skip
    assert exported_reviews, text[-2000:]
    assert "approved-by:bob" in json.dumps(exported_reviews)
    again = env.cli("admin", "audit", "export", "--to", "stdout", "--cursor-file", str(cursor))
    assert again.stdout == ""
