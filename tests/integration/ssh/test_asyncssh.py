"""asyncssh and paramiko clients: environment, port forwarding, approvals, grants, SFTP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest

from jitgate.store.models import utcnow
from tests.fixtures.postgres_gateway import unique
from tests.fixtures.sshd import Sshd, SSHGateway

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def connect(gw: SSHGateway, login: str, token: str) -> AsyncIterator[Any]:
    conn = await asyncio.wait_for(
        asyncssh.connect(
            "127.0.0.1",
            gw.port,
            username=login,
            password=token,
            known_hosts=None,
            client_keys=[],
            agent_path=None,
            config=[],
            preferred_auth="password",
        ),
        20,
    )
    async with conn:
        yield conn


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A TCP server on loopback that answers every line with ``echo:`` + the line."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                peer, _ = sock.accept()
            except TimeoutError:
                continue
            with peer:
                data = peer.recv(1024)
                peer.sendall(b"echo:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


async def test_environment_reaches_the_target_only_when_allowed(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    async with connect(ssh_gateway, conn.name, token) as client:
        result = await client.run(
            'echo "$LANG/$JG_SECRET"', env={"LANG": "C.UTF-8", "JG_SECRET": "x"}, timeout=20
        )
    assert result.stdout == "C.UTF-8/\n"
    row = ssh_gateway.session(conn.name)
    assert ssh_gateway.events(row, "ssh.env")[0]["denied"] == ["JG_SECRET"]


async def test_port_forwarding_is_denied_unless_a_policy_allows_the_destination(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    with echo_server() as port:
        async with connect(ssh_gateway, conn.name, token) as client:
            with pytest.raises(asyncssh.ChannelOpenError, match=r"port forwarding .* not allowed"):
                await client.open_connection("127.0.0.1", port)
            ssh_gateway.policy(
                unique("fwd"),
                f'permit (principal, action == Action::"ssh:forward", '
                f'resource == Connection::"{conn.name}") '
                f'when {{ context.text == "127.0.0.1:{port}" }};',
            )
            reader, writer = await client.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.read(100), 10) == b"echo:ping"
            writer.close()
            with pytest.raises(asyncssh.ChannelOpenError):
                await client.open_connection("127.0.0.1", port + 1 if port < 65535 else 1)
    row = ssh_gateway.session(conn.name)
    decisions = [(e["port"], e["decision"]) for e in ssh_gateway.events(row, "ssh.forward")]
    assert decisions[:2] == [(port, "deny"), (port, "allow")]


async def test_agent_and_x11_forwarding_are_refused(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    """The gateway itself refuses them: it answers the client's requests (the test sshd
    would refuse agent forwarding too, but the gateway never asks it) and records them."""
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    client = await asyncssh.connect(
        "127.0.0.1", ssh_gateway.port, username=conn.name, password=token, known_hosts=None,
        client_keys=[], config=[], preferred_auth="password", agent_forwarding=True,
        agent_path=str(tmp_path / "agent.sock"),
    )  # fmt: skip
    async with client:
        # asyncssh (like OpenSSH) sends its own request without asking for a reply; ask
        # for one on an open session channel (asyncssh has no public call for that).
        chan, _ = await client.create_session(asyncssh.SSHClientSession, "sleep 5")
        assert await chan._make_request(b"auth-agent-req@openssh.com") is False
        chan.close()
        result = await client.run('echo "agent=[$SSH_AUTH_SOCK]"', timeout=20)
        assert result.stdout == "agent=[]\n"
        with pytest.raises(asyncssh.ChannelOpenError, match="X11"):
            await client.create_session(
                asyncssh.SSHClientSession, "true", x11_forwarding=True, x11_display="localhost:0"
            )
    row = ssh_gateway.session(conn.name)
    agent = ssh_gateway.events(row, "ssh.agent")
    assert len(agent) == 3  # the two sessions' own requests, and the one asked here
    assert {(e["decision"], e["reason"]) for e in agent} == {
        ("deny", "agent forwarding is refused")
    }
    assert [e["decision"] for e in ssh_gateway.events(row, "ssh.x11")] == ["deny"]


def _approver(gw: SSHGateway, connection: str, *, approve: bool = True) -> threading.Thread:
    """An approver who decides the first pending request for ``connection`` (from another
    thread, as a person would, through the access service the API uses). The in-process
    gateway is shared by the session's tests: another test's pending request is not ours."""
    approver = gw.add_user(groups=("approvers",))
    access = gw.gateway.access

    def decide() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = access.list_requests(status="pending", connection=connection)
            if pending:
                who = gw.who(approver)
                if approve:
                    access.approve(who, pending[0].id)
                else:
                    access.deny(who, pending[0].id, reason="not today")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=decide, daemon=True)
    thread.start()
    return thread


async def test_exec_needing_review_is_held_until_approved(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("review"),
        f'@outcome("review")\n@reason("deploys need approval")\n'
        f'permit (principal, action == Action::"ssh:exec", resource == Connection::"{conn.name}")'
        f' when {{ context.functions.contains("deploy-now") }};',
    )
    script = "deploy-now() { echo deployed; }; deploy-now"
    async with connect(ssh_gateway, conn.name, token) as client:
        thread = _approver(ssh_gateway, conn.name)
        held = await client.run(script, timeout=30)
        thread.join()
        assert held.exit_status == 0 and held.stdout == "deployed\n"
        assert "held for approval" in str(held.stderr)
        # The approval link, from api.public_url, is on stderr with the request id.
        link = re.search(
            r"POST (https://jitgate\.example\.test/api/v1/requests/([0-9a-f-]{36})"
            r"/approve)",
            str(held.stderr),
        )
        assert link is not None, held.stderr
        assert ssh_gateway.gateway.access.get_request(link.group(2)).status == "approved"
        denied_thread = _approver(ssh_gateway, conn.name, approve=False)
        denied = await client.run(script, timeout=30)
        denied_thread.join()
        assert denied.exit_status == 1 and "not today" in str(denied.stderr)
    row = ssh_gateway.session(conn.name)
    reviews = [e.get("review") for e in ssh_gateway.events(row, "ssh.channel")]
    assert reviews == ["allow", "deny"]


async def test_session_is_closed_with_a_message_when_its_grant_expires(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    name = unique("jit")
    token = ssh_gateway.add_user(name)
    conn = ssh_gateway.add_connection(sshd, tags={"jit": name})
    ssh_gateway.policy(
        unique("needs-grant"),
        f'@reason("{conn.name} needs a just-in-time grant")\n'
        f'forbid (principal, action, resource == Connection::"{conn.name}") '
        "unless { context.has_grant };",
    )
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(ssh_gateway, conn.name, token):
            pass
    access = ssh_gateway.gateway.access
    await asyncio.to_thread(
        access.break_glass,
        ssh_gateway.who(token),
        conn.name,
        reason="incident 42 needs a look",
        duration=timedelta(minutes=5),
    )
    async with connect(ssh_gateway, conn.name, token) as client:
        process = await client.create_process(term_type="dumb")
        process.stdin.write("echo alive\n")
        assert "alive" in await asyncio.wait_for(process.stdout.readuntil("alive"), 10)
        await asyncio.to_thread(access.expire_due, utcnow() + timedelta(minutes=10))
        rest = await asyncio.wait_for(process.stdout.read(), 10)
        assert "jitgate: grant expired" in rest
        await asyncio.wait_for(client.wait_closed(), 10)
    row = ssh_gateway.session(conn.name)
    assert row.end_reason == "jitgate: grant expired"


def test_paramiko_exec_and_sftp(ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path) -> None:
    name = unique("pm")
    token = ssh_gateway.add_user(name)
    conn = ssh_gateway.add_connection(sshd)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(
        f"[127.0.0.1]:{ssh_gateway.port}",
        "ssh-ed25519",
        paramiko.Ed25519Key(data=_key_blob(ssh_gateway.host_key_pub)),
    )
    client.connect(
        "127.0.0.1",
        ssh_gateway.port,
        username=f"{name}+{conn.name}",
        password=token,
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    try:
        _, stdout, stderr = client.exec_command("printf paramiko", timeout=20)
        assert stdout.read() == b"paramiko"
        assert stdout.channel.recv_exit_status() == 0
        _, stdout, stderr = client.exec_command("mkfs.ext4 /dev/jitgate-none", timeout=20)
        assert stdout.channel.recv_exit_status() == 1
        assert b"formats a filesystem" in stderr.read()
        sftp = client.open_sftp()
        remote = str(tmp_path / "pm.txt")
        with sftp.open(remote, "w") as f:
            f.write(b"via paramiko sftp")
        assert sftp.stat(remote).st_size == 17
        with sftp.open(remote, "r") as f:
            assert f.read() == b"via paramiko sftp"
        sftp.remove(remote)
        sftp.close()
    finally:
        client.close()
    row = ssh_gateway.session(conn.name)
    ops = [(e["op"], e.get("status")) for e in ssh_gateway.events(row, "sftp")]
    assert ("open", "ok") in ops and ("remove", "ok") in ops


def _key_blob(public_line: str) -> bytes:
    import base64

    return base64.b64decode(public_line.split()[1])


async def test_typed_line_needing_review_is_held_until_approved(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("review-line"),
        f'@outcome("review")\n@reason("marked lines need approval")\n'
        f'permit (principal, action == Action::"ssh:line", resource == Connection::"{conn.name}")'
        ' when { context.text like "*review-me*" };',
    )
    async with connect(ssh_gateway, conn.name, token) as client:
        process = await client.create_process(
            "env PS1='$ ' bash --norc --noprofile -i", term_type="dumb", stderr=asyncssh.STDOUT
        )
        await asyncio.wait_for(process.stdout.readuntil("$ "), 10)
        thread = _approver(ssh_gateway, conn.name)
        process.stdin.write("echo $((40+2)) review-me\n")
        out = await asyncio.wait_for(process.stdout.readuntil("42 review-me"), 15)
        thread.join()
        assert "needs approval" in out and "held for approval" in out
        process.stdin.write("exit\n")
        await asyncio.wait_for(process.wait_closed(), 10)
    row = ssh_gateway.session(conn.name)
    lines = ssh_gateway.events(row, "ssh.line")
    outcomes = [(e["decision"], e.get("review")) for e in lines]
    assert outcomes == [("review", "allow"), ("allow", None)]


async def test_idle_sessions_are_closed(
    make_ssh_gateway: Callable[..., SSHGateway], sshd: Sshd
) -> None:
    gw = await asyncio.to_thread(make_ssh_gateway, idle_timeout=1)
    token = await asyncio.to_thread(gw.add_user)
    conn = await asyncio.to_thread(gw.add_connection, sshd)
    async with connect(gw, conn.name, token) as client:
        process = await client.create_process("cat", term_type="dumb")
        process.stdin.write("x\n")
        rest = await asyncio.wait_for(process.stdout.read(), 10)
        assert "idle for 1 s" in rest
    row = await asyncio.to_thread(gw.session, conn.name)
    assert row.end_reason == "jitgate: session idle for 1 s, closed"


async def test_window_changes_signals_and_exit_signals_are_relayed(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    token = ssh_gateway.add_user()
    conn = ssh_gateway.add_connection(sshd)
    async with connect(ssh_gateway, conn.name, token) as client:
        process = await client.create_process(
            "echo ready; read _; stty size", term_type="xterm", term_size=(80, 24)
        )
        await asyncio.wait_for(process.stdout.readuntil("ready"), 10)
        process.change_terminal_size(132, 43)
        await asyncio.sleep(0.2)
        process.stdin.write("\n")
        assert "43 132" in await asyncio.wait_for(process.stdout.read(), 10)
        # Relayed as a "signal" request (this sshd does not act on it, so only the record
        # of it is checked here).
        sleeper = await client.create_process("echo ready; sleep 0.5")
        await asyncio.wait_for(sleeper.stdout.readuntil("ready"), 10)
        sleeper.send_signal("TERM")
        await asyncio.wait_for(sleeper.wait(), 10)
        killed = await client.run("kill -KILL $$", timeout=10)
        assert killed.exit_signal is not None and killed.exit_signal[0] == "KILL"
    row = ssh_gateway.session(conn.name)
    assert [e["s"] for e in ssh_gateway.events(row, "term") if e["s"] == "r"][-1:] == ["r"]
    assert ssh_gateway.events(row, "ssh.signal")[0]["signal"] == "TERM"


async def test_typed_input_is_recorded_only_when_configured(
    make_ssh_gateway: Callable[..., SSHGateway], sshd: Sshd
) -> None:
    gw = await asyncio.to_thread(make_ssh_gateway, record_input=True)
    token = await asyncio.to_thread(gw.add_user)
    conn = await asyncio.to_thread(gw.add_connection, sshd)
    async with connect(gw, conn.name, token) as client:
        process = await client.create_process(
            "env PS1='$ ' bash --norc --noprofile -i", term_type="dumb", stderr=asyncssh.STDOUT
        )
        await asyncio.wait_for(process.stdout.readuntil("$ "), 10)
        process.stdin.write("echo typed-in\n")
        await asyncio.wait_for(process.stdout.readuntil("\ntyped-in"), 10)
        process.stdin.write("read -s -p 'Password: ' pw; echo\n")
        await asyncio.wait_for(process.stdout.readuntil("pw; echo"), 10)  # the echo
        await asyncio.wait_for(process.stdout.readuntil("Password: "), 10)  # the prompt
        process.stdin.write("hunter2\n")  # typed at a password prompt: never a "line"
        process.stdin.write("exit\n")
        await asyncio.wait_for(process.wait_closed(), 10)
    row = await asyncio.to_thread(gw.session, conn.name)
    typed = "".join(e["d"] for e in gw.events(row, "term") if e["s"] == "i")
    assert "echo typed-in" in typed
    assert "hunter2" not in typed and "*******" in typed
    lines = gw.events(row, "ssh.line")
    assert {"secret": True} in [{k: v for k, v in e.items() if k == "secret"} for e in lines]
    assert not any("hunter2" in str(e.get("text")) for e in lines)


async def test_an_agent_is_not_held_but_told_to_run_again_after_approval(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    from jitgate.identity.principal import IdentityKind

    name = unique("bot")
    identities = ssh_gateway.gateway.identities
    await asyncio.to_thread(identities.create_identity, name, kind=IdentityKind.AGENT)
    _info, token = await asyncio.to_thread(identities.create_token, name, "t")
    conn = ssh_gateway.add_connection(sshd)
    ssh_gateway.policy(
        unique("review-agent"),
        f'@outcome("review")\n@reason("agents need approval to restart services")\n'
        f'permit (principal, action == Action::"ssh:exec", resource == Connection::"{conn.name}")'
        ' when { context.is_agent && context.text like "*restart*" };',
    )
    async with connect(ssh_gateway, conn.name, token) as client:
        first = await client.run("echo restart-ok", timeout=20)
        assert first.exit_status == 1 and "run the same statement again" in str(first.stderr)
        access = ssh_gateway.gateway.access
        [pending] = [r for r in access.list_requests(status="pending") if r.requester == name]
        approver = ssh_gateway.add_user(groups=("approvers",))
        await asyncio.to_thread(access.approve, ssh_gateway.who(approver), pending.id)
        second = await client.run("echo restart-ok", timeout=20)
        assert (second.exit_status, second.stdout) == (0, "restart-ok\n")
        third = await client.run("echo restart-ok", timeout=20)  # the approval was for once
        assert third.exit_status == 1


async def test_a_grant_for_one_session_admits_one_ssh_session(
    ssh_gateway: SSHGateway, sshd: Sshd
) -> None:
    name = unique("once")
    token = ssh_gateway.add_user(name)
    approver = ssh_gateway.add_user(unique("approver"), groups=("approvers",))
    conn = ssh_gateway.add_connection(sshd, tags={"jit": name})
    ssh_gateway.policy(
        unique("needs-grant"),
        f'forbid (principal, action, resource == Connection::"{conn.name}") '
        "unless { context.has_grant };",
    )
    access = ssh_gateway.gateway.access
    request = await asyncio.to_thread(
        access.create_request, ssh_gateway.who(token), conn.name, reason="one look", max_uses=1
    )
    await asyncio.to_thread(access.approve, ssh_gateway.who(approver), request.id)
    async with connect(ssh_gateway, conn.name, token) as first:
        assert (await first.run("echo one", check=True)).stdout == "one\n"
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(ssh_gateway, conn.name, token):
                pass
        assert (await first.run("echo still", check=True)).stdout == "still\n"
    grant = await asyncio.to_thread(access.get_grant, str(request_grant(access, request.id)))
    assert (grant.uses, grant.max_uses, grant.revoked_at) == (1, 1, None)


def request_grant(access: Any, request_id: str) -> str | None:
    return access.get_request(request_id).grant_id  # type: ignore[no-any-return]


def test_a_link_moved_into_place_in_flight_is_resolved_after_the_move(
    ssh_gateway: SSHGateway, sshd: Sshd, tmp_path: Path
) -> None:
    """Requests sent together: the ``open`` is looked up once the ``rename`` before it
    is answered, so the link the rename puts in its way is followed."""
    conn = ssh_gateway.add_connection(sshd)
    token = ssh_gateway.add_user()
    locked, open_dir = tmp_path / "locked", tmp_path / "open"
    locked.mkdir()
    open_dir.mkdir()
    (locked / "keep.txt").write_text("keep me")
    (open_dir / "prepared").symlink_to(locked / "keep.txt")
    ssh_gateway.policy(
        unique("links"),
        f'@id("no-locked-read-{conn.name}")\n@reason("{locked} is off limits")\n'
        f'forbid (principal, action == Action::"ssh:sftp_read", '
        f'resource == Connection::"{conn.name}")\n'
        f'when {{ context.text like "{locked}/*" }};',
    )

    async def move_and_read() -> list[object]:
        async with connect(ssh_gateway, conn.name, token) as ssh, ssh.start_sftp_client() as sftp:

            async def read() -> bytes:
                async with sftp.open(f"{open_dir}/x", "rb") as f:
                    return bytes(await f.read())

            moved = sftp.rename(f"{open_dir}/prepared", f"{open_dir}/x")
            return list(await asyncio.gather(moved, read(), return_exceptions=True))

    moved, read = ssh_gateway.call(move_and_read())
    assert moved is None
    assert isinstance(read, asyncssh.SFTPPermissionDenied), read
    assert read.reason == f"jitgate: {locked} is off limits"
    events = ssh_gateway.events(ssh_gateway.session(conn.name), "sftp")
    (denied,) = [e for e in events if e.get("decision") == "deny"]
    assert (denied["path"], denied["requested"]) == (f"{locked}/keep.txt", [f"{open_dir}/x"])
