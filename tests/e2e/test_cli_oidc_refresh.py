"""`jitgate login` keeps the IdP's refresh token; once the access token has expired the CLI
renews it by itself. A real provider (short token life), a real `jitgate serve`, the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_oidc_gateway import _read_until, _spawn_login
from tests.fixtures.oidc import OIDCProvider, start_oidc_provider
from tests.support.served import JITGATE, Served, start_gateway, stop, wait_ready

TOKEN_TTL = 6


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[tuple[Served, OIDCProvider]]:
    with start_oidc_provider(token_ttl=TOKEN_TTL) as provider:
        extra = (
            "oidc:\n"
            f"  issuer: {provider.issuer}\n"
            "  audiences: [jitgate, jitgate-cli]\n"
            "  client_id: jitgate-cli\n"
            "  leeway_seconds: 0\n"
            "tokens:\n"
            "  cache_seconds: 0\n"
        )
        data_dir = tmp_path / "data"
        proc = start_gateway(data_dir, extra_config=extra)
        try:
            served = Served(
                proc,
                data_dir,
                wait_ready(proc, data_dir),
                (data_dir / "admin.token").read_text().strip(),
            )
            yield served, provider
        finally:
            stop(proc)


def _exp(token: str) -> float:
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(served.data_dir.parent / "xdg")}
    env.pop("JITGATE_TOKEN", None)
    env.pop("JITGATE_SERVER", None)
    return subprocess.run([*JITGATE, *args], capture_output=True, text=True, env=env, timeout=60)


def _whoami_status(served: Served, token: str) -> int:
    return httpx.get(
        served.api + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_cli_renews_an_expired_oidc_login(
    short_lived: tuple[Served, OIDCProvider],
) -> None:
    served, provider = short_lived
    with _spawn_login(served) as (proc, lines):
        url = _read_until(lines, "To log in, open ").split("To log in, open ", 1)[1].strip()
        provider.browser_driver("alice", "alice-password")(url)
        assert proc.wait(timeout=60) == 0
    saved_file = served.data_dir.parent / "xdg" / "jitgate" / "credentials.json"
    saved = json.loads(saved_file.read_text())
    assert saved["method"] == "oidc" and saved["refresh_token"]
    first = saved["token"]
    assert _exp(first) - time.time() <= TOKEN_TTL

    time.sleep(max(0.0, _exp(first) - time.time() + 1))
    assert _whoami_status(served, first) == 401  # it really has expired at the gateway
    who = _cli(served, "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["identity"]["name"] == "alice"
    renewed = json.loads(saved_file.read_text())
    assert renewed["token"] != first and _exp(renewed["token"]) > time.time()
    assert _whoami_status(served, renewed["token"]) == 200

    # A token the gateway refuses before its time (here: not a token at all) is renewed too.
    saved_file.write_text(json.dumps({**renewed, "token": "x.y.z"}))
    assert _cli(served, "whoami").returncode == 0

    # When the refresh token is no good either, the CLI says to log in again.
    saved_file.write_text(json.dumps({**renewed, "token": first, "refresh_token": "bogus"}))
    failed = _cli(served, "whoami")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: the saved login has expired")
    assert "jitgate login" in failed.stderr and len(failed.stderr.splitlines()) == 1
