"""Issue 2's "Done means", as an operator would check it: `jitgate serve` on an empty data
dir, then curl with the admin token; a credential stored with `jitgate connections add`
is encrypted in the store file and never comes back; users, tokens, a delegation, and
revocations that take effect at once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.served import Served, start_gateway, stop, wait_ready

SECRET = "Done-Means-Pl4nted-S3cret-9071"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    assert not data_dir.exists()
    proc = start_gateway(data_dir)
    served = Served(
        proc, data_dir, wait_ready(proc, data_dir), (data_dir / "admin.token").read_text().strip()
    )
    yield served
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


class Curl:
    """curl against the API; every answer kept, to scan them all for the secret."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.seen: list[str] = []

    def __call__(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        json_body: object = None,
        form: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        args = ["curl", "-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"]
        if token is not None:
            args += ["-H", f"Authorization: Bearer {token}"]
        if json_body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(json_body)]
        for key, value in (form or {}).items():
            args += ["--data-urlencode", f"{key}={value}"]
        result = subprocess.run(
            [*args, self.api + path], capture_output=True, text=True, timeout=60, check=True
        )
        body, _, status = result.stdout.rpartition("\n")
        self.seen.append(body)
        return int(status), json.loads(body) if body else {}


def test_done_means(served: Served) -> None:
    curl = Curl(served.api)
    admin = served.admin_token

    status, who = curl("GET", "/api/v1/whoami", admin)
    assert status == 200 and who["identity"]["name"] == "admin"

    # A user and a token for them (shown once), an agent with its own token.
    status, _ = curl(
        "POST", "/api/v1/users", admin, json_body={"name": "bob", "groups": ["approvers"]}
    )
    assert status == 201
    status, created = curl(
        "POST", "/api/v1/tokens", admin, json_body={"user": "bob", "name": "laptop"}
    )
    assert status == 201 and created["token"].startswith("jgt_")
    bob, bob_token_id = created["token"], created["id"]
    status, tokens = curl("GET", "/api/v1/tokens?all=true", admin)
    assert status == 200 and bob not in json.dumps(tokens)  # never shown again
    status, who = curl("GET", "/api/v1/whoami", bob)
    assert status == 200 and who["identity"]["name"] == "bob"
    assert "approver" in who["identity"]["roles"]
    status, agent = curl(
        "POST",
        "/api/v1/tokens",
        admin,
        json_body={"agent": "ci-bot", "name": "ci", "create_agent": True},
    )
    assert status == 201
    bot = agent["token"]

    # A connection whose password is read from stdin by the CLI.
    added = served.cli(
        "connections",
        "add",
        "prod-db",
        "--type",
        "postgres",
        "--host",
        "127.0.0.1",
        "--port",
        "5432",
        "--database",
        "app",
        "--username",
        "app",
        "--password-stdin",
        "--tag",
        "env=prod",
        stdin=SECRET + "\n",
    )
    assert SECRET not in added.stdout + added.stderr
    status, listed = curl("GET", "/api/v1/connections", admin)
    assert status == 200 and [c["name"] for c in listed["items"]] == ["prod-db"]
    status, shown = curl("GET", "/api/v1/connections/prod-db", admin)
    assert status == 200 and shown["credential"] == {"kind": "password", "set": True}
    assert shown["tags"] == {"env": "prod"}

    # Delegation: bob lets ci-bot act for him; the agent exchanges its token for one that
    # is bob's, with ci-bot as the actor.
    status, record = curl(
        "POST", "/api/v1/delegations", bob, json_body={"agent": "ci-bot", "expires_in": 600}
    )
    assert status == 201
    status, exchanged = curl(
        "POST",
        "/api/v1/tokens/exchange",
        None,
        form={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": record["id"],
            "subject_token_type": "urn:jitgate:params:token-type:delegation",
            "actor_token": bot,
            "actor_token_type": "urn:ietf:params:oauth:token-type:access_token",
        },
    )
    assert status == 200, exchanged
    delegated = exchanged["access_token"]
    status, who = curl("GET", "/api/v1/whoami", delegated)
    assert status == 200 and who["identity"]["name"] == "bob"
    assert who["actor"]["name"] == "ci-bot" and who["method"] == "delegated"
    status, _ = curl("GET", "/api/v1/connections/prod-db", delegated)
    assert status == 200

    # Revocations take effect on the next request.
    status, _ = curl("DELETE", f"/api/v1/delegations/{record['id']}", bob)
    assert status == 200
    status, refused = curl("GET", "/api/v1/whoami", delegated)
    assert status == 401 and refused["error"]["code"] == "unauthenticated"
    status, _ = curl("DELETE", f"/api/v1/tokens/{bob_token_id}", admin)
    assert status == 200
    status, refused = curl("GET", "/api/v1/whoami", bob)
    assert status == 401 and refused["error"]["message"] == "token revoked"

    status, audit = curl("GET", "/api/v1/audit?limit=500", admin)
    actions = {e["action"] for e in audit["items"]}
    assert {
        "connection:create",
        "token:create",
        "delegation:create",
        "delegation:revoke",
        "token:revoke",
    } <= actions

    code, out, err = stop(served.proc)
    assert code == 0, err
    # The secret is in no API answer, no log line, and not in cleartext in the store.
    assert all(SECRET not in body for body in curl.seen)
    assert SECRET not in out + err
    store_files = list(served.data_dir.glob("jitgate.db*"))
    assert served.data_dir / "jitgate.db" in store_files
    assert any(b"prod-db" in path.read_bytes() for path in store_files)  # the row is here
    for path in store_files:
        raw = path.read_bytes()
        assert SECRET.encode() not in raw and SECRET.encode("utf-16-le") not in raw, path
