"""Log-in attempts of the SSH session object: each answer belongs to its own attempt.

A real client cannot produce these sequences: asyncssh cancels an attempt when the client
starts the next one, so an older attempt never finishes after a newer one. The session
must not depend on that, and these tests drive its hooks directly with stand-ins for the
store look-ups.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import asyncssh

from jitgate.protocols.ssh.session import GatewayConnection


def _connection(lookup: Any, authenticate: Any) -> GatewayConnection:
    gateway = SimpleNamespace(access=None, authenticator=SimpleNamespace(authenticate=authenticate))
    listener = SimpleNamespace(
        gateway=gateway, settings=None, keys=SimpleNamespace(authenticate=lookup)
    )
    return GatewayConnection(listener)  # type: ignore[arg-type]


async def test_an_attempt_overtaken_by_a_newer_one_is_void() -> None:
    release = threading.Event()

    def slow_lookup(key: asyncssh.SSHKey) -> str:
        release.wait(5)
        return "victim"

    conn = _connection(slow_lookup, lambda token, client_addr: "own")

    async def admit(username: str, who: str, method: str, *, key: str | None = None) -> Any:
        return SimpleNamespace(username=username, who=who, method=method, key=key)

    conn._admit = admit  # type: ignore[method-assign]
    key = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    older = asyncio.create_task(conn.validate_public_key("web", key))
    await asyncio.sleep(0.05)  # the key look-up is under way
    assert await conn.validate_password("web", "own-token")
    release.set()
    assert not await older  # it finished last, but a newer attempt had started
    assert conn._admission is not None and conn._admission.who == "own"


async def test_a_failed_attempt_clears_the_answer_of_the_one_before() -> None:
    conn = _connection(lambda key: "victim", lambda token, client_addr: "own")

    async def admit(username: str, who: str, method: str, *, key: str | None = None) -> Any:
        return None if method == "password" else SimpleNamespace(who=who)

    conn._admit = admit  # type: ignore[method-assign]
    key = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    assert await conn.validate_public_key("web", key)  # a probe that was admitted
    assert not await conn.validate_password("web", "wrong")
    assert conn._admission is None
