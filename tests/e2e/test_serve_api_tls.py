"""The API over HTTPS (`api.tls`) from a real `jitgate serve`, checked with curl and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.served import JITGATE, start_gateway, stop, wait_ready


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=60
    )


def test_api_over_https_with_the_generated_certificate(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config="api:\n  port: 0\n  tls: true\n")
    try:
        api = wait_ready(proc, data_dir)
        assert api.startswith("https://127.0.0.1:")
        token = (data_dir / "admin.token").read_text().strip()
        ca = data_dir / "tls" / "gateway.crt"

        ok = _curl(
            "--cacert", str(ca), "-H", f"Authorization: Bearer {token}", api + "/api/v1/whoami"
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["identity"]["name"] == "admin"
        unverified = _curl(api + "/healthz")  # the system trust store does not know it
        assert unverified.returncode == 60, unverified.stderr
        cleartext = _curl(api.replace("https://", "http://") + "/healthz")
        assert cleartext.returncode != 0 or '"ok"' not in cleartext.stdout

        env = {
            **os.environ,
            "JITGATE_SERVER": api,
            "JITGATE_TOKEN": token,
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        }
        env.pop("JITGATE_CA_FILE", None)
        refused = subprocess.run(
            [*JITGATE, "whoami"], capture_output=True, text=True, env=env, timeout=60
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: cannot verify the TLS certificate")
        assert "JITGATE_CA_FILE" in refused.stderr and len(refused.stderr.splitlines()) == 1
        who = subprocess.run(
            [*JITGATE, "whoami", "-o", "json"],
            capture_output=True,
            text=True,
            env={**env, "JITGATE_CA_FILE": str(ca)},
            timeout=60,
        )
        assert who.returncode == 0, who.stderr
        assert json.loads(who.stdout)["identity"]["name"] == "admin"
        bad_ca = subprocess.run(
            [*JITGATE, "whoami"],
            capture_output=True,
            text=True,
            env={**env, "JITGATE_CA_FILE": str(tmp_path / "none.pem")},
            timeout=60,
        )
        assert bad_ca.returncode == 1
        assert bad_ca.stderr.startswith("error: JITGATE_CA_FILE: cannot use")
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert "cleartext" not in err


def test_cleartext_api_off_loopback_warns(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config="api:\n  host: 0.0.0.0\n  port: 0\n")
    try:
        wait_ready(proc, data_dir)
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert "WARNING jitgate.serve: the API on 0.0.0.0 serves cleartext HTTP" in err
