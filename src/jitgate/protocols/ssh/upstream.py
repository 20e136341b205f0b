"""The gateway's own SSH connection to the target, with its credential and a pinned host key.

The connection's options say which host key to trust:

* ``host_key`` — the target's public host key (``ssh-ed25519 AAAA…``, as in
  ``known_hosts`` or ``/etc/ssh/ssh_host_*_key.pub``), set when the connection is
  created; only that key is accepted;
* ``host_key_policy: tofu`` — trust on first use: with no ``host_key`` yet, the key the
  target presents on the first connection is stored in ``host_key`` and pinned from then
  on.

Without either the session is refused: the gateway never connects to a target it cannot
authenticate. A key that does not match refuses the session with both fingerprints.
The client never sees the target credential; it is not logged, recorded or echoed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import asyncssh

from jitgate.connections.types import ConnectionInfo, Credential, CredentialKind

log = logging.getLogger("jitgate.ssh")


UPSTREAM_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


class UpstreamError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class HostKeyPin:
    key: asyncssh.SSHKey | None
    tofu: bool

    @classmethod
    def of(cls, info: ConnectionInfo) -> HostKeyPin:
        text = info.options.get("host_key")
        tofu = str(info.options.get("host_key_policy", "")).lower() == "tofu"
        if not text:
            return cls(None, tofu)
        try:
            return cls(asyncssh.import_public_key(str(text).strip()), tofu)
        except (asyncssh.KeyImportError, ValueError):
            raise UpstreamError(
                f"the pinned host key of connection {info.name!r} is not a valid public key"
            ) from None


class _PinningClient(asyncssh.SSHClient):
    """Accepts exactly the pinned key (or, for trust-on-first-use, the first one seen)."""

    def __init__(self, pin: HostKeyPin) -> None:
        self.pin = pin
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = key
        if self.pin.key is None:
            return self.pin.tofu
        return bool(key.public_data == self.pin.key.public_data)


@dataclass(slots=True)
class Upstream:
    conn: asyncssh.SSHClientConnection
    host_key: asyncssh.SSHKey | None
    learned_host_key: str | None  # set when trust-on-first-use pinned a new key


async def connect(
    info: ConnectionInfo,
    credential: Credential | None,
    *,
    connect_timeout: float,
    login_timeout: float,
) -> Upstream:
    if not info.username:
        raise UpstreamError(f"connection {info.name!r} has no username for the target")
    pin = HostKeyPin.of(info)
    if pin.key is None and not pin.tofu:
        raise UpstreamError(
            f"connection {info.name!r} has no pinned host key: set its host_key option "
            "(or host_key_policy=tofu to trust the first key seen)"
        )
    client = _PinningClient(pin)
    options: dict[str, object] = {
        "known_hosts": ([], [], []),  # every key goes through _PinningClient
        "username": info.username,
        "agent_path": None,
        "agent_forwarding": False,
        "config": [],
        "client_keys": [],
        "password": None,
        "kbdint_auth": False,
        "gss_auth": False,
        "host_based_auth": False,
        "connect_timeout": connect_timeout,
        "login_timeout": login_timeout,
        "encoding": None,
        "keepalive_interval": 30,
        # AES-GCM first: with AES-NI it is the fastest cipher for a Python SSH stack;
        # the others stay as fallbacks for targets that lack it.
        "encryption_algs": UPSTREAM_CIPHERS,
    }
    if pin.key is not None:
        options["server_host_key_algs"] = [a.decode() for a in pin.key.sig_algorithms]
    if credential is None:
        raise UpstreamError(f"connection {info.name!r} has no credential")
    if credential.kind is CredentialKind.PRIVATE_KEY:
        try:
            key = asyncssh.import_private_key(credential.secret, credential.passphrase)
        except (asyncssh.KeyImportError, ValueError):
            raise UpstreamError(
                f"the private key of connection {info.name!r} cannot be read"
            ) from None
        options["client_keys"] = [key]
        options["password_auth"] = False
    elif credential.kind is CredentialKind.PASSWORD:
        options["password"] = credential.secret
        options["public_key_auth"] = False
    else:
        raise UpstreamError(f"connection {info.name!r} has a {credential.kind.value} credential")
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(info.host, info.port, client_factory=lambda: client, **options),
            connect_timeout + login_timeout,
        )
    except asyncssh.HostKeyNotVerifiable:
        got = client.presented.get_fingerprint("sha256") if client.presented else "none"
        want = pin.key.get_fingerprint("sha256") if pin.key else "none"
        raise UpstreamError(
            f"the host key of {info.name!r} does not match the pinned key "
            f"(presented {got}, pinned {want}); the session is refused"
        ) from None
    except asyncssh.PermissionDenied:
        raise UpstreamError(
            f"the target of {info.name!r} rejected the gateway's credential"
        ) from None
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        if isinstance(exc, asyncssh.Error):
            detail = exc.reason
        refused = isinstance(exc, TimeoutError | ConnectionRefusedError | socket.gaierror)
        if pin.key is not None and client.presented is None and not refused:
            # The key exchange failed before any host key was shown: the usual cause is
            # a target that has no host key of the pinned type.
            raise UpstreamError(
                f"the target of {info.name!r} ended the key exchange ({detail}); it may offer "
                f"no host key of the pinned type ({pin.key.get_algorithm()})"
            ) from None
        raise UpstreamError(f"cannot reach the target of {info.name!r}: {detail}") from None
    learned = None
    if pin.key is None and client.presented is not None:
        learned = client.presented.export_public_key("openssh").decode().strip()
    return Upstream(conn, client.presented, learned)
