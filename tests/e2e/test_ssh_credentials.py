"""The SSH target's credential never reaches the client: OpenSSH ssh, scp and sftp through a
real `jitgate serve` to a real sshd; the stored private key is looked for in everything
the clients printed, the gateway's log (at debug level) and the recordings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.sshd import Sshd, keygen, sshd
from tests.support.served import Served, start_gateway, stop, wait_ready

TARGET_PASSWORD = "Tgt-ssh-Pa55word-7c1e-never-shown"

__all__ = ["sshd"]


def secret_pieces(private_key: str) -> list[str]:
    """The key's text and every line of its base64 body: a leak shows one of them,
    whether the key was printed whole, re-wrapped or JSON-escaped."""
    body = [line for line in private_key.splitlines() if line and "PRIVATE KEY" not in line]
    assert len(body) >= 3
    return [private_key.strip(), *body]


def test_target_private_key_never_reaches_client_log_or_recordings(
    sshd: Sshd, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config="log_level: debug\n")
    seen: list[bytes] = []
    try:
        api = wait_ready(proc, data_dir)
        port = int(json.loads((data_dir / "serve.json").read_text())["listeners"]["ssh"]
                   .rsplit(":", 1)[1])  # fmt: skip
        served = Served(proc, data_dir, api, (data_dir / "admin.token").read_text().strip())
        added = served.cli("connections", "add", "box", "--type", "ssh", "--host", "127.0.0.1",
                           "--port", str(sshd.port), "--username", sshd.user,
                           "--private-key-file", str(sshd.client_key),
                           "--option", f"host_key={sshd.host_key_pub}")  # fmt: skip
        # A connection whose stored key the target does not accept: its refusal is output too.
        wrong_key = keygen(tmp_path / "not_authorized")
        served.cli("connections", "add", "wrong", "--type", "ssh", "--host", "127.0.0.1",
                   "--port", str(sshd.port), "--username", sshd.user,
                   "--private-key-file", str(wrong_key),
                   "--option", f"host_key={sshd.host_key_pub}")  # fmt: skip
        shown = served.cli("connections", "show", "box", "-o", "json")
        listed = served.cli("connections", "list", "-o", "json")
        seen += [(c.stdout + c.stderr).encode() for c in (added, shown, listed)]

        key = keygen(tmp_path / "admin_key")
        served.cli("ssh-keys", "add", f"{key}.pub")
        host_key = (data_dir / "ssh" / "host_ed25519_key.pub").read_text().split()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        opts = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-i",
            str(key),
            "-v",
        ]

        def run(*argv: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
            done = subprocess.run(
                list(argv),
                input=input,
                capture_output=True,
                timeout=60,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
            seen.extend((done.stdout, done.stderr))
            return done

        ssh = ["ssh", *opts, "-p", str(port)]
        exec_ = run(*ssh, "box@127.0.0.1", "echo exec-ok; env | sort; ls -a ~/.ssh || true")
        assert exec_.returncode == 0 and b"exec-ok\n" in exec_.stdout, exec_.stderr
        shell = run(*ssh, "-tt", "box@127.0.0.1", input=b"echo shell-ok\nexit\n")
        assert b"shell-ok" in shell.stdout, shell.stderr

        local = tmp_path / "upload.txt"
        local.write_text("payload through the gateway\n")
        remote = sshd.dir / "uploaded.txt"
        scp = ["scp", *opts, "-P", str(port)]
        up = run(*scp, str(local), f"box@127.0.0.1:{remote}")
        assert up.returncode == 0, up.stderr
        down = run(*scp, "-O", f"box@127.0.0.1:{remote}", str(tmp_path / "back.txt"))
        assert down.returncode == 0, down.stderr
        assert (tmp_path / "back.txt").read_text() == "payload through the gateway\n"
        batch = tmp_path / "batch"
        batch.write_text(f"ls -l {sshd.dir}\nget {remote} {tmp_path / 'sftp.txt'}\n"
                         f"put {local} {sshd.dir / 'sftp-up.txt'}\n")  # fmt: skip
        sftp = run("sftp", *opts, "-P", str(port), "-b", str(batch), "box@127.0.0.1")
        assert sftp.returncode == 0, sftp.stderr
        assert (tmp_path / "sftp.txt").read_text() == "payload through the gateway\n"

        refused = run(*ssh, "wrong@127.0.0.1", "echo never")
        assert refused.returncode != 0 and b"never" not in refused.stdout
        sessions = json.loads(served.cli("sessions", "list", "-o", "json").stdout)
        assert len([s for s in sessions if s["connection"] == "box"]) >= 5
        for s in sessions:
            replay = served.cli("sessions", "show", s["id"], "-o", "json")
            seen.append(replay.stdout.encode())
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "box" in err or "box" in out  # the debug log did see these sessions
    recordings = [p.read_bytes() for p in (data_dir / "recordings").rglob("*") if p.is_file()]
    assert recordings
    places = {
        "client output": b"\n".join(seen),
        "gateway log": (out + err).encode(),
        "recordings": b"\n".join(recordings),
    }
    assert b"exec-ok" in places["recordings"] and b"shell-ok" in places["recordings"]
    for secret in (sshd.private_key, wrong_key.read_text()):
        for piece in secret_pieces(secret):
            for where, content in places.items():
                assert piece.encode() not in content, f"a piece of the target key in the {where}"


@pytest.fixture(autouse=True)
def _no_stray_ssh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSH_AUTH_SOCK", "SSH_ASKPASS"):
        monkeypatch.delenv(name, raising=False)


class _PasswordTarget(asyncssh.SSHServer):
    """An SSH server (asyncssh) that admits one password: the connection's credential."""

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return password == TARGET_PASSWORD


async def _run(process: asyncssh.SSHServerProcess[str]) -> None:
    process.stdout.write(f"target ran: {process.command}\n")
    process.exit(0)


@contextlib.contextmanager
def password_target() -> Iterator[tuple[int, str]]:
    """A password-only SSH target on loopback (exec, scp and sftp on the local files); the
    OpenSSH sshd fixture takes keys only. Yields its port and its host key to pin."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            _PasswordTarget, "127.0.0.1", 0, server_host_keys=[host_key], process_factory=_run,
            sftp_factory=True, allow_scp=True)  # fmt: skip

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    try:
        pin = " ".join(host_key.export_public_key("openssh").decode().split()[:2])
        yield server.sockets[0].getsockname()[1], pin
    finally:
        server.close()
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_target_password_never_reaches_client_log_or_recordings(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seen: list[bytes] = []
    with password_target() as (target_port, pin):
        proc = start_gateway(data_dir, extra_config="log_level: debug\n")
        try:
            api = wait_ready(proc, data_dir)
            port = int(json.loads((data_dir / "serve.json").read_text())["listeners"]["ssh"]
                       .rsplit(":", 1)[1])  # fmt: skip
            served = Served(proc, data_dir, api, (data_dir / "admin.token").read_text().strip())
            wrong = "Wrong-" + TARGET_PASSWORD
            for name, password in (("pw-box", TARGET_PASSWORD), ("pw-wrong", wrong)):
                added = served.cli("connections", "add", name, "--type", "ssh", "--host",
                                   "127.0.0.1", "--port", str(target_port), "--username", "ops",
                                   "--password-stdin", "--option", f"host_key={pin}",
                                   stdin=password + "\n")  # fmt: skip
                seen.append((added.stdout + added.stderr).encode())
            seen.append(served.cli("connections", "show", "pw-box", "-o", "json").stdout.encode())
            key = keygen(tmp_path / "admin_key")
            served.cli("ssh-keys", "add", f"{key}.pub")
            host_key = (data_dir / "ssh" / "host_ed25519_key.pub").read_text().split()
            known = tmp_path / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
            opts = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", str(key),
                    "-v"]  # fmt: skip

            def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
                done = subprocess.run(list(argv), capture_output=True, timeout=60,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
                seen.extend((done.stdout, done.stderr))
                return done

            ran = run("ssh", *opts, "-p", str(port), "pw-box@127.0.0.1", "echo exec-ok")
            assert ran.stdout == b"target ran: echo exec-ok\n", ran.stderr
            local = tmp_path / "upload.txt"
            local.write_text("through the gateway\n")
            remote = tmp_path / "remote.txt"
            # legacy scp: this target, like many, sends no exit status for the sftp subsystem
            up = run("scp", *opts, "-O", "-P", str(port), str(local),
                     f"pw-box@127.0.0.1:{remote}")  # fmt: skip
            assert up.returncode == 0 and remote.read_text() == "through the gateway\n", up.stderr
            batch = tmp_path / "batch"
            batch.write_text(f"get {remote} {tmp_path / 'back.txt'}\nls {tmp_path}\n")
            got = run("sftp", *opts, "-P", str(port), "-b", str(batch), "pw-box@127.0.0.1")
            assert got.returncode == 0, got.stderr
            assert (tmp_path / "back.txt").read_text() == "through the gateway\n"
            refused = run("ssh", *opts, "-p", str(port), "pw-wrong@127.0.0.1", "echo never")
            assert refused.returncode != 0 and b"target ran" not in refused.stdout
        finally:
            code, out, err = stop(proc)
    assert code == 0, err
    recordings = [p.read_bytes() for p in (data_dir / "recordings").rglob("*") if p.is_file()]
    assert b"echo exec-ok" in b"\n".join(recordings)  # the exec request was recorded
    for where, content in (("client output", b"\n".join(seen)),
                           ("gateway log", (out + err).encode()),
                           ("recordings", b"\n".join(recordings))):  # fmt: skip
        assert TARGET_PASSWORD.encode() not in content, f"the target password in the {where}"
