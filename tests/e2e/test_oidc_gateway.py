"""OIDC end to end: a real provider process, a real `jitgate serve`, the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jitgate.server.tls import generate_self_signed
from tests.fixtures.oidc import OIDCProvider, start_oidc_provider
from tests.support.served import JITGATE, Served, start_gateway, stop, wait_ready


@pytest.fixture
def oidc_served(tmp_path: Path, oidc_provider: OIDCProvider) -> Iterator[Served]:
    extra = (
        "oidc:\n"
        f"  issuer: {oidc_provider.issuer}\n"
        "  audiences: [jitgate, jitgate-cli]\n"
        "  client_id: jitgate-cli\n"
        "  groups_claim: groups\n"
        "tokens:\n"
        "  cache_seconds: 0\n"
    )
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config=extra)
    served = Served(
        proc, data_dir, wait_ready(proc, data_dir), (data_dir / "admin.token").read_text().strip()
    )
    yield served
    if proc.poll() is None:
        stop(proc)


def _whoami(served: Served, token: str) -> httpx.Response:
    return httpx.get(served.api + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})


def test_idp_tokens_identify_users_and_agents(
    oidc_served: Served, oidc_provider: OIDCProvider
) -> None:
    tokens = oidc_provider.login_device("alice", "alice-password")
    for token in (tokens.access_token, tokens.id_token):
        assert token
        who = _whoami(oidc_served, token)
        assert who.status_code == 200, who.text
        ident = who.json()["identity"]
        assert ident["name"] == "alice" and ident["kind"] == "user"
        assert "admins" in ident["groups"] and "admin" in ident["roles"]
        assert who.json()["method"] == "oidc"
    bob = oidc_provider.login_device("bob", "bob-password")
    bob_who = _whoami(oidc_served, bob.access_token).json()["identity"]
    assert bob_who["roles"] == ["approver", "user"]

    machine = oidc_provider.client_credentials_token()
    agent = _whoami(oidc_served, machine).json()["identity"]
    assert agent["kind"] == "agent"

    # The provisioned identities are visible to admins, with where they came from.
    users = json.loads(oidc_served.cli("users", "list", "-o", "json").stdout)
    sources = {u["name"]: u["source"] for u in users}
    assert sources["alice"] == "oidc" and sources["admin"] == "local"


def test_forged_and_tampered_idp_tokens_refused(
    oidc_served: Served, oidc_provider: OIDCProvider
) -> None:
    token = oidc_provider.login_device("bob", "bob-password").access_token
    header, payload, signature = token.split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["admins"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = _whoami(oidc_served, f"{header}.{forged_payload}.{signature}")
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "unauthenticated"
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    assert _whoami(oidc_served, f"{none_alg}.{payload}.").status_code == 401


def _read_until(stream: queue.Queue[str], needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            line = stream.get(timeout=0.2)
        except queue.Empty:
            continue
        seen += line
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed; got {seen!r}")


@contextlib.contextmanager
def _spawn_login(
    served: Served, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(served.data_dir.parent / "xdg"),
        "JITGATE_SERVER": served.api,
        **(env or {}),
    }
    env.pop("JITGATE_TOKEN", None)
    proc = subprocess.Popen(
        [*JITGATE, "login", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _cli_whoami(served: Served) -> dict[str, object]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(served.data_dir.parent / "xdg")}
    env.pop("JITGATE_TOKEN", None)
    env.pop("JITGATE_SERVER", None)
    result = subprocess.run(
        [*JITGATE, "whoami", "-o", "json"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_cli_login_with_device_flow(oidc_served: Served, oidc_provider: OIDCProvider) -> None:
    with _spawn_login(oidc_served) as (proc, lines):
        line = _read_until(lines, "To log in, open ")
        url = line.split("To log in, open ", 1)[1].strip()
        _read_until(lines, "enter the code")
        page = oidc_provider.browser_driver("alice", "alice-password")(url)
        assert page.status_code == 200
        assert proc.wait(timeout=60) == 0
        _read_until(lines, "logged in as alice")
    who = _cli_whoami(oidc_served)
    assert who["identity"]["name"] == "alice"  # type: ignore[index]
    assert who["method"] == "oidc"


def test_cli_login_with_browser_pkce(oidc_served: Served, oidc_provider: OIDCProvider) -> None:
    with _spawn_login(oidc_served, "--browser", "--no-open") as (proc, lines):
        _read_until(lines, "Open this URL to log in")
        url = _read_until(lines, "http").strip()
        page = oidc_provider.browser_driver("bob", "bob-password")(url)
        assert "close this window" in page.text
        assert proc.wait(timeout=60) == 0
    who = _cli_whoami(oidc_served)
    assert who["identity"]["name"] == "bob"  # type: ignore[index]


def test_cli_login_denied_by_user(oidc_served: Served, oidc_provider: OIDCProvider) -> None:
    from tests.fixtures.oidc import OIDCProvider as Provider

    with _spawn_login(oidc_served) as (proc, lines):
        url = _read_until(lines, "To log in, open ").split("To log in, open ", 1)[1].strip()
        Provider._browse("alice", "alice-password", url, deny=True)
        assert proc.wait(timeout=60) == 1
        _read_until(lines, "error: login failed")


def test_cli_login_with_an_issuer_behind_a_private_ca(tmp_path: Path) -> None:
    """The identity provider serves HTTPS with a certificate of a private CA: the gateway
    trusts it through ``oidc.ca_file``, the CLI through ``JITGATE_CA_FILE``; without it the
    CLI says which certificate it could not verify and how to trust it."""
    cert, key = tmp_path / "idp.crt", tmp_path / "idp.key"
    generate_self_signed(cert, key, ("127.0.0.1",))
    with start_oidc_provider(tls=(cert, key)) as provider:
        assert provider.issuer.startswith("https://127.0.0.1:")
        extra = (
            f"oidc:\n  issuer: {provider.issuer}\n  ca_file: {cert}\n"
            "  audiences: [jitgate, jitgate-cli]\n  client_id: jitgate-cli\n"
        )
        data_dir = tmp_path / "data"
        proc = start_gateway(data_dir, extra_config=extra)
        try:
            served = Served(proc, data_dir, wait_ready(proc, data_dir),
                            (data_dir / "admin.token").read_text().strip())  # fmt: skip
            with _spawn_login(served) as (refused, lines):
                assert refused.wait(timeout=60) == 1
                line = _read_until(lines, "error:")
                assert "cannot verify the TLS certificate of the OIDC issuer" in line
                assert "JITGATE_CA_FILE" in line
            with _spawn_login(served, env={"JITGATE_CA_FILE": str(cert)}) as (login, lines):
                url = _read_until(lines, "To log in, open ").split("To log in, open ", 1)[1]
                _read_until(lines, "enter the code")
                page = provider.browser_driver("alice", "alice-password")(url.strip())
                assert page.status_code == 200
                assert login.wait(timeout=60) == 0
                _read_until(lines, "logged in as alice")
            who = _cli_whoami(served)
            assert who["identity"]["name"] == "alice"  # type: ignore[index]
            assert who["method"] == "oidc"
        finally:
            if proc.poll() is None:
                stop(proc)
