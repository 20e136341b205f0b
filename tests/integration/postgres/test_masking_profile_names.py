"""Mask profile names are checked where they are given: a connection's default profile and
a policy's ``@mask`` must name a profile that exists, and a profile in use stays.

Through the served API and the ``jitgate`` CLI, as an operator would use them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import httpx
import pytest

from jitgate.api.app import create_app
from tests.fixtures.gateway import API, serve_app
from tests.fixtures.postgres_gateway import PgGateway, unique
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def api(pg_gateway: PgGateway) -> Iterator[API]:
    with (
        serve_app(create_app(pg_gateway.gateway)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield API(client, pg_gateway.admin_token)


def cli(api: API, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JITGATE_SERVER": str(api.client.base_url),
        "JITGATE_TOKEN": api.token,
        "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="jitgate-xdg-"),
    }
    return subprocess.run(
        [sys.executable, "-m", "jitgate.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def mask_policy(profile: str) -> str:
    return (
        f'@id("masked") @mask("{profile}")\n'
        "permit (principal, action, resource) when { resource.tags has masked };"
    )


def test_unknown_profile_on_a_connection_is_refused(
    api: API, pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = unique("conn")
    body = {
        "name": name,
        "type": "postgres",
        "host": "127.0.0.1",
        "port": pg_scram.port,
        "options": {"mask_profile": "no-such-profile"},
    }
    created = api.post("/api/v1/connections", json=body)
    assert created.status_code == 400 and error_code(created) == "invalid_mask_profile"
    assert "no-such-profile" in created.json()["error"]["message"]
    assert api.get(f"/api/v1/connections/{name}").status_code == 404  # nothing was stored
    body["options"] = {"mask_profile": "pii"}
    assert api.post("/api/v1/connections", json=body).status_code == 201
    patched = api.request(
        "PATCH", f"/api/v1/connections/{name}", json={"options": {"mask_profile": "piii"}}
    )
    assert patched.status_code == 400 and error_code(patched) == "invalid_mask_profile"
    assert api.get(f"/api/v1/connections/{name}").json()["options"] == {"mask_profile": "pii"}
    # the CLI says why and exits non-zero; removing the default profile is fine
    refused = cli(api, "connections", "update", name, "--mask-profile", "piii")
    assert refused.returncode != 0 and "unknown mask profile" in refused.stderr
    added = cli(
        api,
        "connections",
        "add",
        unique("c"),
        "--type",
        "postgres",
        "--host",
        "127.0.0.1",
        "--mask-profile",
        "nope",
    )
    assert added.returncode != 0 and "unknown mask profile" in added.stderr
    assert cli(api, "connections", "update", name, "--mask-profile", "").returncode == 0
    assert api.get(f"/api/v1/connections/{name}").json()["options"] == {}


def test_unknown_profile_in_a_policy_is_refused(api: API) -> None:
    name = unique("masked-policy")
    put = api.request("PUT", f"/api/v1/policies/{name}", json={"text": mask_policy("nope")})
    assert put.status_code == 400 and error_code(put) == "invalid_mask_profile"
    assert api.get(f"/api/v1/policies/{name}").status_code == 404
    posted = api.post("/api/v1/policies", json={"name": name, "text": mask_policy("nope")})
    assert posted.status_code == 400 and error_code(posted) == "invalid_mask_profile"
    ok = api.request("PUT", f"/api/v1/policies/{name}", json={"text": mask_policy("strict")})
    assert ok.status_code == 200, ok.text
    assert api.delete(f"/api/v1/policies/{name}").status_code == 204


def test_a_profile_in_use_cannot_be_deleted(
    api: API, pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    profile = unique("in-use")
    definition = {"definition": {"rules": [{"types": ["email"]}]}}
    assert (
        api.request("PUT", f"/api/v1/masking/profiles/{profile}", json=definition).status_code
        == 200
    )
    connection = pg_gateway.add_connection(pg_scram).name
    patched = api.request(
        "PATCH", f"/api/v1/connections/{connection}", json={"options": {"mask_profile": profile}}
    )
    assert patched.status_code == 200, patched.text
    policy = unique("uses-profile")
    assert (
        api.request(
            "PUT", f"/api/v1/policies/{policy}", json={"text": mask_policy(profile)}
        ).status_code
        == 200
    )
    refused = api.delete(f"/api/v1/masking/profiles/{profile}")
    assert refused.status_code == 409 and error_code(refused) == "mask_profile_in_use"
    message = refused.json()["error"]["message"]
    assert connection in message and policy in message
    removed = cli(api, "mask", "profiles", "rm", profile)
    assert removed.returncode != 0 and "in use" in removed.stderr
    # once nothing names it, it can go
    api.request("PATCH", f"/api/v1/connections/{connection}", json={"options": {}})
    assert api.delete(f"/api/v1/policies/{policy}").status_code == 204
    assert api.delete(f"/api/v1/masking/profiles/{profile}").status_code == 204
