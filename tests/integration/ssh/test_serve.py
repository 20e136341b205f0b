"""`jitgate serve` with the SSH listener enabled: banner, CLI set-up, a session, shutdown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.fixtures.sshd import Sshd, keygen
from tests.support.served import Served, start_gateway, stop, wait_ready


def test_serve_runs_the_ssh_listener(sshd: Sshd, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config="  ssh:\n    enabled: true\n    port: 0\n")
    try:
        api = wait_ready(proc, data_dir)
        port = int(json.loads((data_dir / "serve.json").read_text())["listeners"]["ssh"]
                   .rsplit(":", 1)[1])  # fmt: skip
        served = Served(proc, data_dir, api, (data_dir / "admin.token").read_text().strip())
        served.cli("connections", "add", "box", "--type", "ssh", "--host", "127.0.0.1",
                   "--port", str(sshd.port), "--username", sshd.user,
                   "--private-key-file", str(sshd.client_key),
                   "--option", "host_key_policy=tofu")  # fmt: skip
        key = keygen(tmp_path / "admin_key")
        served.cli("ssh-keys", "add", f"{key}.pub")
        host_key = (data_dir / "ssh" / "host_ed25519_key.pub").read_text().split()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        result = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={known}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "IdentityAgent=none", "-i", str(key), "-p", str(port), "box@127.0.0.1",
             "echo served"],
            capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.stdout == b"served\n", result.stderr
        sessions = json.loads(served.cli("sessions", "list", "-o", "json").stdout)
        assert any(s["protocol"] == "ssh" and s["connection"] == "box" for s in sessions)
    finally:
        code, out, _err = stop(proc)
    assert code == 0
    assert "ssh listener" in out
