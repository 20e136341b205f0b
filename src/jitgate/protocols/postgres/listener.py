"""The PostgreSQL listener: accepts native clients and runs one session per connection.

It also routes CancelRequests. The client sees the upstream's real backend PID (clients
compare it with NOTIFY senders and pass it to ``pg_terminate_backend``) but a secret key
made by the gateway; a cancel is honoured only when both match a live session, and is
then sent upstream with the upstream's own secret, which no client ever sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

from jitgate.access.events import GrantsChanged
from jitgate.policy.service import LiveEngine
from jitgate.policy.types import PolicyEngine
from jitgate.protocols.postgres import upstream as up
from jitgate.protocols.postgres.legs import Leg
from jitgate.server.tls import server_context
from jitgate.sql.postgres import PostgresClassifier

if TYPE_CHECKING:
    from jitgate.protocols.postgres.session import PostgresSession
    from jitgate.server.gateway import Gateway

log = logging.getLogger("jitgate.postgres")


class PostgresListener:
    name = "postgres"

    def __init__(self, gateway: Gateway, policy: PolicyEngine | None = None) -> None:
        self.gateway = gateway
        self.settings = gateway.settings.listeners.postgres
        self.ssl_context = server_context(gateway.tls_cert, gateway.tls_key)
        self.policy: PolicyEngine = policy or LiveEngine(gateway.policies)
        self.classifier = PostgresClassifier()
        self.recorder = gateway.recorder
        self.sessions: set[PostgresSession] = set()
        self.cancel_keys: dict[int, PostgresSession] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=1024,
        )
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        self.gateway.access.events.on_grants_changed(self._grants_changed)
        return f"{self.settings.host}:{self.port}"

    def _grants_changed(self, event: GrantsChanged) -> None:
        """Re-check the sessions a grant change may affect (it may end them)."""
        loop = asyncio.get_running_loop()
        for session in list(self.sessions):
            who = session.who
            if who is None:
                continue
            if event.identity not in (None, who.principal.name):
                continue
            if event.connection not in (None, session.connection_name):
                continue
            session.grants_ended(event.ended)
            task = loop.create_task(session.refresh_grants(event.ended))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _accept(self) -> Leg:
        from jitgate.protocols.postgres.session import PostgresSession

        leg = Leg("client", self.settings.max_message_bytes)
        loop = asyncio.get_running_loop()

        def begin(leg: Leg) -> None:
            session = PostgresSession(self, leg)
            self.sessions.add(session)
            task = loop.create_task(session.run())
            self._tasks.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._tasks.discard(t)
                self.sessions.discard(session)

            task.add_done_callback(done)

        leg.on_connect = begin
        return leg

    def new_cancel_secret(self, session: PostgresSession) -> int:
        while True:
            secret = secrets.randbits(32)
            if secret not in self.cancel_keys:
                self.cancel_keys[secret] = session
                return secret

    async def cancel(self, pid: int, secret: int) -> None:
        session = self.cancel_keys.get(secret)
        if session is None or session.upstream is None:
            return
        upstream = session.upstream
        if not hmac.compare_digest(pid.to_bytes(4, "big"), upstream.pid.to_bytes(4, "big")):
            return
        info_host, info_port = session.upstream_address
        try:
            await up.send_cancel(info_host, info_port, upstream.pid, upstream.secret)
        except OSError as exc:
            log.warning("cancel for backend %s failed: %s", pid, exc)
        if session.recorder is not None:
            with contextlib.suppress(OSError):
                session.recorder.event("cancel", {"backend_pid": pid})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.terminate("jitgate: the gateway is shutting down")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
