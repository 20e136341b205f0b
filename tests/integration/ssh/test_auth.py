"""Log-in: a session is the identity of the credential that authenticated, nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import Sshd, SSHGateway

pytestmark = pytest.mark.timeout(60)


class ProbeOnly(asyncssh.SSHKeyPair):
    """A public key the client offers without its private half: asyncssh sends the unsigned
    probe, gets PK_OK, cannot sign and goes on to its next key."""

    def __init__(self, public: asyncssh.SSHKey) -> None:
        algorithms = public.sig_algorithms
        super().__init__(
            public.algorithm, public.algorithm, algorithms, algorithms, public.public_data, None
        )

    def sign(self, data: bytes) -> bytes:
        raise ValueError("this client holds no private key for it")


async def connect_with_keys(gw: SSHGateway, login: str, keys: list[Any]) -> Any:
    return await asyncio.wait_for(
        asyncssh.connect(
            "127.0.0.1", gw.port, username=login, known_hosts=None, client_keys=keys,
            agent_path=None, config=[], preferred_auth="publickey",
        ),
        20,
    )  # fmt: skip


async def test_probing_another_identitys_public_key_does_not_log_in_as_it(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    attacker, victim = unique("mallory"), unique("victim")
    ssh_gateway.add_user(attacker)
    ssh_gateway.add_user(victim)
    own = ssh_gateway.add_key(attacker)
    theirs = ssh_gateway.add_key(victim)
    conn = ssh_gateway.add_connection(sshd)
    own_private = asyncssh.read_private_key(own)
    their_public = asyncssh.read_public_key(Path(f"{theirs}.pub"))
    # On the wire: probe own key (PK_OK), probe the victim's public key (PK_OK: no
    # signature is needed to ask), then sign with the own key.
    keys = [ProbeOnly(own_private.convert_to_public()), ProbeOnly(their_public), own_private]
    client = await connect_with_keys(ssh_gateway, conn.name, keys)
    async with client:
        result = await client.run("echo in", timeout=20)
        assert result.stdout == "in\n"
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    assert (row.identity_name, row.auth_method) == (attacker, "publickey")
    auth = ssh_gateway.events(row, "ssh.auth")[0]
    assert auth["key"] == own_private.get_fingerprint("sha256")

    # Asking to be the victim, the own signature is refused, whatever was probed before.
    keys = [ProbeOnly(their_public), own_private]
    with pytest.raises(asyncssh.PermissionDenied):
        await connect_with_keys(ssh_gateway, f"{victim}+{conn.name}", keys)
    assert len(ssh_gateway.sessions(conn.name)) == 1


@pytest.mark.parametrize("method", ["password", "keyboard-interactive"])
async def test_the_session_says_how_the_token_was_given(
    ssh_gateway: SSHGateway, sshd: Sshd, method: str
) -> None:
    name = unique("tok")
    token = ssh_gateway.add_user(name)
    conn = ssh_gateway.add_connection(sshd)

    class Answer(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: Any
        ) -> list[str]:
            return [token for _ in prompts]

    client = await asyncio.wait_for(
        asyncssh.connect(
            "127.0.0.1", ssh_gateway.port, username=conn.name, password=token,
            known_hosts=None, client_keys=[], agent_path=None, config=[],
            preferred_auth=method, client_factory=Answer,
        ),
        20,
    )  # fmt: skip
    async with client:
        await client.run("true", timeout=20, check=True)
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    expected = "password" if method == "password" else "kbd-interactive"
    assert (row.identity_name, row.auth_method) == (name, expected)
    auth = ssh_gateway.events(row, "ssh.auth")[0]
    assert auth == auth | {"method": expected, "credential": "api_token"}
    assert "key" not in auth
