"""The SSH listener: accepts unchanged OpenSSH (and other) clients on port 12222.

``ssh -p 12222 CONNECTION@GW`` or ``ssh -p 12222 USER+CONNECTION@GW``. The gateway's
host key is generated in the data directory on first start and reused afterwards, so
clients can pin it in their ``known_hosts``. Sessions are described in :mod:`.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from jitgate.access.events import GrantsChanged
from jitgate.config import ConfigError
from jitgate.policy.service import LiveEngine
from jitgate.policy.types import PolicyEngine
from jitgate.protocols.ssh.keys import SSHKeyService

if TYPE_CHECKING:
    from jitgate.protocols.ssh.session import GatewayConnection
    from jitgate.server.gateway import Gateway

log = logging.getLogger("jitgate.ssh")


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The gateway's Ed25519 host key; written (mode 0600) the first time."""
    if path.exists():
        try:
            return asyncssh.read_private_key(str(path))
        except (OSError, asyncssh.KeyImportError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            raise ConfigError(f"SSH host key file {path}: cannot use it: {reason}") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="jitgate host key")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    os.replace(tmp, path)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    log.info("generated the SSH host key %s", key.get_fingerprint("sha256"))
    return key


class SSHListener:
    name = "ssh"

    def __init__(self, gateway: Gateway, policy: PolicyEngine | None = None) -> None:
        self.gateway = gateway
        self.settings = gateway.settings.listeners.ssh
        self.policy: PolicyEngine = policy or LiveEngine(gateway.policies)
        self.keys = SSHKeyService(gateway.store, gateway.identities)
        self.recorder = gateway.recorder
        self.connections: set[GatewayConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.host_key: asyncssh.SSHKey | None = None
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> str:
        from jitgate.protocols.ssh.quiet import skip_unlogged_packets
        from jitgate.protocols.ssh.session import GatewayConnection

        skip_unlogged_packets()
        self.host_key = await asyncio.to_thread(
            load_or_create_host_key, self.gateway.paths.ssh_host_key
        )
        options: dict[str, Any] = {}
        if self.settings.ciphers:
            options["encryption_algs"] = list(self.settings.ciphers)
        self._server = await asyncssh.create_server(
            lambda: GatewayConnection(self),
            self.settings.host,
            self.settings.port,
            server_host_keys=[self.host_key],
            server_version="jitgate",
            encoding=None,
            line_editor=False,  # bytes pass through untouched; the target's PTY edits
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            login_timeout=self.settings.login_timeout,
            keepalive_interval=30,
            reuse_address=True,
            **options,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.gateway.access.events.on_grants_changed(self._grants_changed)
        return f"{self.settings.host}:{self.port}"

    def _grants_changed(self, event: GrantsChanged) -> None:
        for connection in list(self.connections):
            who = connection.who
            if who is None:
                continue
            if event.identity not in (None, who.principal.name):
                continue
            if event.connection not in (None, connection.connection_name):
                continue
            connection.grants_ended(event.ended)
            connection.spawn(connection.refresh_grants(event.ended))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.terminate("jitgate: the gateway is shutting down")
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
