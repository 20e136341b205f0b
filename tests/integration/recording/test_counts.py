"""A session row counts its requests by decision, review included, for relays that
report decided requests themselves (SSH), on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jitgate.policy.types import Outcome
from jitgate.recording.recorder import Recorder, SessionMeta
from jitgate.store.db import Store
from jitgate.store.models import SessionRow

META = SessionMeta(
    protocol="ssh", connection_id=None, connection_name="box", identity_id="i",
    identity_name="ann", actor_id=None, actor_name=None, auth_method="api_token",
    token_id=None, client_addr="127.0.0.1", client_program="test",
)  # fmt: skip


def test_requests_are_counted_by_decision_review_included(store: Store, tmp_path: Path) -> None:
    async def run() -> str:
        recorder = await Recorder(store, tmp_path).open(META)
        recorder.decided("ssh.channel", {"command": "ls", "decision": "allow"}, Outcome.ALLOW)
        held = {"command": "deploy", "decision": "review", "review": "allow"}
        recorder.decided("ssh.channel", held, Outcome.ALLOW)
        refused = {"command": "deploy", "decision": "review", "review": "deny"}
        recorder.decided("ssh.channel", refused, Outcome.DENY)
        await recorder.close("client disconnected", 1, 2)
        return recorder.session_id

    session_id = asyncio.run(run())
    with store.session() as db:
        row = db.get(SessionRow, session_id)
        assert row is not None
        assert row.counts == {"allow": 2, "deny": 1, "review": 2}
