"""What an SSH session's record holds, and what happens when it cannot be written.

The session row counts requests by decision and names its grants; grants added or ended
during the session are events. When the event log cannot be written the disk is made to
fail for real, as in tests/integration/recording/test_failure_modes.py: the session's
event-log descriptor is pointed at ``/dev/full`` (every write fails with ENOSPC) and
pointed back to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from jitgate.api.app import create_app
from jitgate.recording.recorder import SessionRecorder
from tests.fixtures.gateway import serve_app
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import Sshd, SSHGateway

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def connect(gw: SSHGateway, login: str, token: str) -> AsyncIterator[Any]:
    conn = await asyncio.wait_for(
        asyncssh.connect(
            "127.0.0.1", gw.port, username=login, password=token, known_hosts=None,
            client_keys=[], agent_path=None, config=[], preferred_auth="password",
        ),
        20,
    )  # fmt: skip
    async with conn:
        yield conn


def _recorder(gw: SSHGateway, connection: str) -> SessionRecorder:
    async def find() -> SessionRecorder:
        for _ in range(200):
            found = [
                c.recorder
                for c in gw.listener.connections
                if c.connection_name == connection and c.recorder is not None
            ]
            if found:
                return found[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no recorded session on {connection!r}")

    return gw.call(find())


@contextlib.contextmanager
def disk_full(recorder: SessionRecorder) -> Iterator[None]:
    assert recorder.log is not None and recorder.log._fd is not None
    fd = recorder.log._fd
    saved = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(full)


# ------------------------------------------------------------------- the record


async def test_the_session_counts_decisions_and_names_its_grants(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    name = unique("counted")
    token = ssh_gateway.add_user(name)
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("needs-grant"),
        f'forbid (principal, action, resource == Connection::"{conn.name}") '
        "unless { context.has_grant };",
    )
    access = ssh_gateway.gateway.access
    who = ssh_gateway.who(token)
    first = await asyncio.to_thread(
        access.break_glass, who, conn.name, reason="incident 7 needs a look",
        duration=timedelta(minutes=5),
    )  # fmt: skip
    (tmp_path / "f.txt").write_text("x")
    async with connect(ssh_gateway, conn.name, token) as client:
        assert (await client.run("echo ok", timeout=20)).exit_status == 0
        assert (await client.run("mkfs.ext4 /dev/sdz9", timeout=20)).exit_status == 1
        with pytest.raises(asyncssh.ChannelOpenError):
            await client.open_connection("127.0.0.1", 9)
        async with client.start_sftp_client() as sftp:
            assert await sftp.listdir(str(tmp_path))
        second = await asyncio.to_thread(
            access.break_glass, who, conn.name, reason="incident 7, second look",
            duration=timedelta(minutes=5),
        )  # fmt: skip
        for _ in range(100):  # the grant change reaches the session
            if second.id in ssh_gateway.call(_grant_ids(ssh_gateway, conn.name)):
                break
            await asyncio.sleep(0.05)
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    # allowed: the exec, the sftp subsystem and its opendir; denied: mkfs and the forward
    assert row.counts == {"allow": 3, "deny": 2}
    assert row.grant_ids == [first.id]
    changes = ssh_gateway.events(row, "grants")
    assert changes and changes[0]["added"] == [second.id] and changes[0]["ended"] == []
    assert ssh_gateway.events(row, "session.start")[0]["grant_ids"] == [first.id]

    with serve_app(create_app(ssh_gateway.gateway)) as url:
        async with httpx.AsyncClient() as http:
            listed = await http.get(
                f"{url}/api/v1/sessions",
                params={"connection": conn.name, "decision": "deny"},
                headers={"Authorization": f"Bearer {ssh_gateway.admin_token}"},
            )
    assert listed.status_code == 200, listed.text
    body = listed.json()
    items = body["items"] if isinstance(body, dict) else body
    assert [s["id"] for s in items] == [row.id]


async def _grant_ids(gw: SSHGateway, connection: str) -> set[str]:
    return {g for c in gw.listener.connections if c.connection_name == connection
            for g in c.grants.ids}  # fmt: skip


# --------------------------------------------------------------- failing disks


async def test_fail_closed_refuses_what_cannot_be_recorded_and_keeps_the_session(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    marker = tmp_path / "ran"
    async with connect(ssh_gateway, conn.name, token) as client:
        assert (await client.run("echo one", timeout=20)).stdout == "one\n"
        shell = await client.create_process(
            "env PS1='$ ' bash --norc --noprofile -i", term_type="dumb", stderr=asyncssh.STDOUT
        )
        await asyncio.wait_for(shell.stdout.readuntil("$ "), 10)
        sftp = await client.start_sftp_client()
        assert await sftp.listdir(str(tmp_path)) is not None
        await asyncio.sleep(0.3)  # the prompt's terminal frame is written
        recorder = _recorder(ssh_gateway, conn.name)
        with disk_full(recorder):
            # The exec's event cannot be written: it is refused, not run.
            first = await client.run(f"touch {marker}", timeout=20)
            assert first.exit_status == 1, first
            assert "cannot be recorded" in str(first.stderr)
            assert recorder.refusing
            # The failure is known: every new request is refused, the session stays.
            again = await client.run(f"touch {marker}", timeout=20)
            assert again.exit_status == 1 and "requests are refused" in str(again.stderr)
            with pytest.raises(asyncssh.ChannelOpenError, match="cannot be recorded"):
                await client.open_connection("127.0.0.1", 9)
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="cannot be recorded"):
                await sftp.listdir(str(tmp_path))  # on the SFTP session opened before
            with pytest.raises(asyncssh.Error):
                async with client.start_sftp_client():
                    pass
            shell.stdin.write(f"touch {marker}\n")
            await asyncio.wait_for(shell.stdout.readuntil("requests are refused"), 10)
        assert not marker.exists()
        # The disk has space again: once a write succeeds, requests run again (the first
        # one may still be refused, like a statement on PostgreSQL).
        for _ in range(3):
            back = await client.run("echo back", timeout=20)
            if back.exit_status == 0:
                break
        assert back.stdout == "back\n"
        shell.stdin.write("exit\n")
        await asyncio.wait_for(shell.wait_closed(), 10)
        sftp.exit()
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    assert row.recording_state == "failed"  # it had failures, though nothing was lost
    ssh_gateway.verify(row)
    events = ssh_gateway.events(row)
    refused = [e for e in events if e["type"] == "request.refused"]
    assert len(refused) == 1
    (unwritten,) = [e for e in events if e["seq"] == refused[0]["event"]]
    assert (unwritten["type"], unwritten["command"]) == ("ssh.channel", f"touch {marker}")
    denials = [e for e in events if "builtin:recording-failed" in e.get("policies", ())]
    assert {e["type"] for e in denials} == {"ssh.channel", "ssh.forward", "sftp", "ssh.line"}
    assert row.counts["deny"] >= 5


async def test_fail_open_lets_ssh_traffic_through_and_says_so_loudly(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jitgate.recording")
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.gateway.connections.update(conn.name, options={
        **conn.options, "recording_on_failure": "open"})  # fmt: skip
    marker = tmp_path / "ran"
    async with connect(ssh_gateway, conn.name, token) as client:
        assert (await client.run("true", timeout=20)).exit_status == 0
        recorder = _recorder(ssh_gateway, conn.name)
        assert recorder.fail_open
        with disk_full(recorder):
            result = await client.run(f"touch {marker}", timeout=20)
            assert result.exit_status == 0, result
            assert recorder.log is not None and recorder.log.failed is not None
    assert marker.exists()
    assert "RECORDING FAILURE (fail-open)" in caplog.text
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    assert row.recording_state == "failed"


async def test_a_session_that_cannot_be_recorded_is_refused_unless_recording_is_off(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    recorder = ssh_gateway.gateway.recorder
    root = recorder.root
    recorder.root = Path("/dev/null/recordings")  # not a directory: every open fails
    try:
        async with connect(ssh_gateway, conn.name, token) as client:
            refused = await client.run("echo no", timeout=20)
        assert refused.exit_status == 255 and "cannot be recorded" in str(refused.stderr)
        # with recording off for the connection, the session is allowed and indexed only
        ssh_gateway.gateway.connections.update(
            conn.name, options={**conn.options, "recording": False}
        )
        async with connect(ssh_gateway, conn.name, token) as client:
            assert (await client.run("echo yes", timeout=20)).stdout == "yes\n"
    finally:
        recorder.root = root
    row = await asyncio.to_thread(ssh_gateway.session, conn.name)
    assert row.recording_state == "off" and row.recording_path is None
    assert row.counts == {"allow": 1}
