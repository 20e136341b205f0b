"""The REST API over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from jitgate.server.gateway import Gateway
from tests.fixtures.gateway import API

SECRET = "Pl4nted-S3cret-in-the-vault-0042"


def _error(response: Any, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "Traceback" not in response.text
    return body["error"]


def _user_token(api: API, name: str, groups: list[str] | None = None) -> str:
    assert api.post("/api/v1/users", json={"name": name, "groups": groups or []}).status_code == 201
    response = api.post("/api/v1/tokens", json={"user": name, "name": "t"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def test_health_and_openapi(api: API) -> None:
    assert api.as_(None).get("/healthz").json() == {"status": "ok"}
    ready = api.as_(None).get("/readyz")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    spec = api.as_(None).get("/openapi.json").json()
    for path in (
        "/api/v1/whoami",
        "/api/v1/connections",
        "/api/v1/tokens",
        "/api/v1/users",
        "/api/v1/audit",
        "/api/v1/tokens/exchange",
        "/api/v1/delegations",
    ):
        assert path in spec["paths"]
    keys = api.as_(None).get("/api/v1/keys").json()["keys"]
    assert keys[0]["kty"] == "OKP" and "d" not in keys[0]


def test_whoami_with_admin_token(api: API) -> None:
    body = api.get("/api/v1/whoami").json()
    assert body["identity"]["name"] == "admin"
    assert "admin" in body["identity"]["roles"] and body["method"] == "api_token"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "Bearer"),
        ({"Authorization": "Bearer jgt_0000000000000000" + "A" * 40}, "unknown token"),
        ({"Authorization": "Bearer not-a-token"}, "malformed"),
        ({"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."}, "issuer"),
    ],
)
def test_unauthenticated(api: API, headers: dict[str, str], reason: str) -> None:
    response = api.as_(None).get("/api/v1/whoami", headers=headers)
    error = _error(response, 401)
    assert error["code"] == "unauthenticated" and reason in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_connection_crud_never_returns_credential(
    api: API, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = api.post(
        "/api/v1/connections",
        json={
            "name": "prod-db",
            "type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "database": "app",
            "username": "app",
            "tags": {"env": "prod"},
            "password": SECRET,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["credential"] == {"kind": "password", "set": True}
    responses = [
        created,
        api.get("/api/v1/connections"),
        api.get("/api/v1/connections/prod-db"),
        api.patch("/api/v1/connections/prod-db", json={"port": 6432, "password": SECRET + "2"}),
        api.get("/api/v1/audit"),
        api.post(
            "/api/v1/connections",
            json={"name": "prod-db", "type": "postgres", "host": "h", "password": SECRET},
        ),
        api.post(
            "/api/v1/connections",
            json={
                "name": "p2",
                "type": "postgres",
                "host": "h",
                "password": SECRET,
                "token": SECRET,
            },
        ),
        api.get("/openapi.json"),
    ]
    for response in responses:
        assert SECRET not in response.text
    assert SECRET not in caplog.text
    assert api.get("/api/v1/connections/prod-db").json()["port"] == 6432
    _info, credential = gateway.connections.resolve("prod-db")
    assert credential is not None and credential.secret == SECRET + "2"
    assert api.delete("/api/v1/connections/prod-db").status_code == 204
    _error(api.get("/api/v1/connections/prod-db"), 404)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"name": "x", "type": "postgres", "host": "h", "colour": "red"}, 422, "colour: unknown"),
        ({"name": "x", "type": "oracle", "host": "h"}, 422, "type"),
        ({"name": "x", "type": "postgres", "host": "h", "port": "five"}, 422, "port"),
        ({"name": "x", "type": "postgres"}, 422, "host: field required"),
        (
            {"name": "x'; DROP TABLE connections;--", "type": "postgres", "host": "h"},
            400,
            "invalid connection name",
        ),
        ({"name": "x", "type": "postgres", "host": "h", "tags": {"env": 5}}, 422, "tags"),
        (
            {"name": "x", "type": "postgres", "host": "h", "options": {"a": {"b": 1}}},
            422,
            "options",
        ),
    ],
)
def test_bad_connection_input(api: API, body: dict[str, Any], status: int, needle: str) -> None:
    error = _error(api.post("/api/v1/connections", json=body), status)
    assert needle in error["message"]
    assert api.get("/api/v1/connections").json()["items"] == []


def test_malformed_json_and_oversized_body(api: API, gateway: Gateway) -> None:
    response = api.post(
        "/api/v1/connections", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert "JSON" in _error(response, 400)["message"]
    huge = {
        "name": "x",
        "type": "postgres",
        "host": "h",
        "description": "a" * (gateway.settings.api.max_body_bytes + 10),
    }
    assert _error(api.post("/api/v1/connections", json=huge), 413)["code"] == "payload_too_large"

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    streamed = api.post(
        "/api/v1/connections", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert api.get("/api/v1/connections").json()["items"] == []


def test_unknown_route_and_method(api: API) -> None:
    assert _error(api.get("/api/v1/nothing"), 404)["code"] == "not_found"
    assert _error(api.request("PUT", "/api/v1/whoami"), 405)["code"] == "method_not_allowed"


def test_roles_are_enforced(api: API) -> None:
    user = api.as_(_user_token(api, "dave"))
    auditor = api.as_(_user_token(api, "carol", ["auditors"]))
    conn = {"name": "db", "type": "postgres", "host": "h"}
    assert _error(user.post("/api/v1/connections", json=conn), 403)["code"] == "forbidden"
    assert _error(user.get("/api/v1/audit"), 403)["code"] == "forbidden"
    assert _error(user.get("/api/v1/users"), 403)["code"] == "forbidden"
    assert _error(user.post("/api/v1/users", json={"name": "eve"}), 403)
    assert _error(user.post("/api/v1/tokens", json={"user": "carol", "name": "x"}), 403)
    assert _error(user.get("/api/v1/users/carol"), 403)
    assert user.get("/api/v1/users/dave").status_code == 200
    assert auditor.get("/api/v1/audit").status_code == 200
    assert auditor.get("/api/v1/users").status_code == 200
    assert _error(auditor.post("/api/v1/connections", json=conn), 403)
    assert user.get("/api/v1/connections").status_code == 200


def test_tokens_own_and_agents(api: API) -> None:
    user = api.as_(_user_token(api, "dave"))
    own = user.post("/api/v1/tokens", json={"name": "laptop", "expires_in": 3600})
    assert own.status_code == 201 and own.json()["identity"] == "dave"
    assert [t["name"] for t in user.get("/api/v1/tokens").json()["items"]] == [
        "laptop",
        "t",
    ] or sorted(t["name"] for t in user.get("/api/v1/tokens").json()["items"]) == ["laptop", "t"]
    _error(user.get("/api/v1/tokens", params={"all": True}), 403)
    agent = api.post("/api/v1/tokens", json={"agent": "ci-bot", "name": "ci", "create_agent": True})
    assert agent.status_code == 201 and agent.json()["identity_kind"] == "agent"
    _error(api.post("/api/v1/tokens", json={"agent": "ghost", "name": "ci"}), 404)
    _error(api.post("/api/v1/tokens", json={"agent": "dave", "name": "x"}), 400)
    _error(user.delete(f"/api/v1/tokens/{agent.json()['id']}"), 403)
    bot = api.as_(agent.json()["token"])
    assert bot.get("/api/v1/whoami").json()["identity"]["kind"] == "agent"
    assert api.delete(f"/api/v1/tokens/{agent.json()['id']}").json()["active"] is False
    _error(bot.get("/api/v1/whoami"), 401)
    _error(api.post("/api/v1/tokens", json={"name": "dup", "expires_in": 5}), 422)


def test_revoked_token_stops_at_once(api: API) -> None:
    token = _user_token(api, "dave")
    user = api.as_(token)
    assert user.get("/api/v1/whoami").status_code == 200
    token_id = user.get("/api/v1/whoami").json()["token_id"]
    assert user.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    assert "revoked" in _error(user.get("/api/v1/whoami"), 401)["message"]


def test_disabling_user_stops_their_tokens(api: API) -> None:
    user = api.as_(_user_token(api, "dave"))
    assert user.get("/api/v1/whoami").status_code == 200
    assert api.patch("/api/v1/users/dave", json={"disabled": True}).status_code == 200
    _error(user.get("/api/v1/whoami"), 401)


def test_local_login(api: API) -> None:
    api.post("/api/v1/users", json={"name": "erin", "password": "erin-password-1"})
    response = api.as_(None).post(
        "/api/v1/login", json={"username": "erin", "password": "erin-password-1"}
    )
    assert response.status_code == 200
    session = api.as_(response.json()["token"])
    assert session.get("/api/v1/whoami").json()["method"] == "login"
    bad = api.as_(None).post("/api/v1/login", json={"username": "erin", "password": "nope"})
    assert _error(bad, 401)["message"] == "invalid user name or password"
    for _ in range(12):
        last = api.as_(None).post("/api/v1/login", json={"username": "erin", "password": "x"})
    assert _error(last, 429)["code"] == "too_many_requests"


def test_pagination(api: API) -> None:
    for i in range(7):
        body = {"name": f"db{i}", "type": "postgres", "host": "h"}
        assert api.post("/api/v1/connections", json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/connections", params=params).json()
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"db{i}" for i in range(7)]
    _error(api.get("/api/v1/connections", params={"limit": 0}), 422)
    _error(api.get("/api/v1/audit", params={"cursor": "abc"}), 400)


def test_audit_log_records_who_did_what(api: API) -> None:
    api.post(
        "/api/v1/connections",
        json={"name": "db", "type": "postgres", "host": "h", "password": SECRET},
    )
    api.patch("/api/v1/connections/db", json={"tags": {"env": "prod"}})
    api.delete("/api/v1/connections/db")
    events = api.get("/api/v1/audit", params={"action": "connection:*"}).json()["items"]
    assert [e["action"] for e in events] == [
        "connection:create",
        "connection:update",
        "connection:delete",
    ]
    assert all(e["actor"] == "admin" and e["client_addr"] == "127.0.0.1" for e in events)
    assert events[1]["details"] == {"changed": ["tags"]}


def test_delegations_list_is_paginated(api: API) -> None:
    alice = api.as_(_user_token(api, "alice"))
    api.post("/api/v1/tokens", json={"agent": "ci-bot", "name": "ci", "create_agent": True})
    made = {
        alice.post("/api/v1/delegations", json={"agent": "ci-bot", "expires_in": 600}).json()["id"]
        for _ in range(3)
    }
    first = alice.get("/api/v1/delegations", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"] == first["items"][-1]["id"]
    rest = alice.get(
        "/api/v1/delegations", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {d["id"] for d in first["items"] + rest["items"]} == made
    _error(alice.get("/api/v1/delegations", params={"cursor": "bogus"}), 400)


def test_token_exchange_and_delegations_over_http(api: API) -> None:
    alice = api.as_(_user_token(api, "alice"))
    bot_token = api.post(
        "/api/v1/tokens", json={"agent": "ci-bot", "name": "ci", "create_agent": True}
    ).json()["token"]
    record = alice.post("/api/v1/delegations", json={"agent": "ci-bot", "expires_in": 600})
    assert record.status_code == 201, record.text
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": record.json()["id"],
        "subject_token_type": "urn:jitgate:params:token-type:delegation",
        "actor_token": bot_token,
        "actor_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }
    exchanged = api.as_(None).post("/api/v1/tokens/exchange", data=form)
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    delegated = api.as_(exchanged.json()["access_token"])
    who = delegated.get("/api/v1/whoami").json()
    assert who["identity"]["name"] == "alice" and who["actor"]["name"] == "ci-bot"
    assert who["method"] == "delegated"
    _error(delegated.post("/api/v1/tokens", json={"name": "sneaky"}), 403)
    assert alice.delete(f"/api/v1/delegations/{record.json()['id']}").status_code == 200
    _error(delegated.get("/api/v1/whoami"), 401)
    again = api.as_(None).post("/api/v1/tokens/exchange", json=form)
    assert "revoked" in _error(again, 403)["message"]
    _error(api.as_(None).post("/api/v1/tokens/exchange", json={**form, "grant_type": "x"}), 422)
    _error(
        api.as_(None).post(
            "/api/v1/tokens/exchange", content=b"{", headers={"Content-Type": "application/json"}
        ),
        400,
    )
